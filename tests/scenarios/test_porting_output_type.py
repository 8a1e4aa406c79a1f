"""``output_type=`` on ``create_function``, ``ctx.step.run`` and ``ctx.step.invoke``:
pydantic models go in and come out, fresh and replayed; sync and async handlers."""

from __future__ import annotations

import pydantic
import pytest

import fanout
from tests.support import make_app, run_of, wait_run

app, client = make_app(__name__)


class User(pydantic.BaseModel):
    name: str
    age: int


class Report(pydantic.BaseModel):
    users: list[User]
    oldest: str


@client.create_function(fn_id="child", trigger=fanout.TriggerEvent(event="t/never-child"),
                        output_type=User)
def child(ctx: fanout.ContextSync) -> User:
    return User(name=ctx.event.data["name"], age=40)


@client.create_function(fn_id="typed", trigger=fanout.TriggerEvent(event="t/typed"),
                        output_type=Report)
def typed(ctx: fanout.ContextSync) -> Report:
    ann = ctx.step.run("ann", lambda: User(name="ann", age=31), output_type=User)
    # The next step runs in a later pass: `ann` comes back from the memo, as a User.
    bob = ctx.step.run("bob", lambda: User(name="bob", age=ann.age + 1), output_type=User)
    kid = ctx.step.invoke("kid", function=child, data={"name": "cy"}, output_type=User)
    assert isinstance(ann, User) and isinstance(bob, User) and isinstance(kid, User)
    users = ctx.step.run("all", lambda: [ann, bob, kid], output_type=list[User])
    return Report(users=users, oldest=max(users, key=lambda u: u.age).name)


@client.create_function(fn_id="typed-async", trigger=fanout.TriggerEvent(event="t/typed-async"),
                        output_type=Report)
async def typed_async(ctx: fanout.Context) -> Report:
    async def make_ann() -> User:
        return User(name="ann", age=31)

    ann = await ctx.step.run("ann", make_ann, output_type=User)
    bob = await ctx.step.run("bob", lambda: User(name="bob", age=ann.age + 1), output_type=User)
    kid = await ctx.step.invoke("kid", function=child, data={"name": "cy"}, output_type=User)
    assert isinstance(ann, User) and isinstance(bob, User) and isinstance(kid, User)
    return Report(users=[ann, bob, kid], oldest=kid.name)


@client.create_function(fn_id="wrong", trigger=fanout.TriggerEvent(event="t/wrong"), retries=2)
def wrong(ctx: fanout.ContextSync) -> object:
    return ctx.step.run("w", lambda: {"name": "x"}, output_type=User)


@pytest.mark.parametrize("fn_id", ["typed", "typed-async"])
def test_models_in_and_out(worker: object, fn_id: str) -> None:
    run = wait_run(client, run_of(client, client.emit(f"t/{fn_id}"), fn_id))
    assert run.status == "completed", run.error
    assert Report.model_validate(run.output).oldest == "cy"
    assert run.output["users"][1] == {"name": "bob", "age": 32}
    assert next(s for s in run.steps if s.step_id == "ann").output == {"name": "ann", "age": 31}


def test_a_value_that_does_not_fit_fails_the_step_once(worker: object) -> None:
    run = wait_run(client, run_of(client, client.emit("t/wrong"), "wrong"))
    assert run.status == "failed"
    assert "output_type=User" in run.error["message"]
    assert run.steps[0].attempts == 1


def test_a_type_pydantic_cannot_use_is_refused() -> None:
    with pytest.raises(fanout.ConfigError, match="output_type"):
        client.create_function(fn_id="bad-type", trigger=fanout.TriggerEvent(event="t/x"),
                               output_type=object())(lambda ctx: None)
