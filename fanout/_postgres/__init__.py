"""The optional PostgreSQL history store (``celery-fanout[postgres]``): ``store.py`` holds
the table and its queries, ``copier.py`` the loop that copies ended runs into it."""
