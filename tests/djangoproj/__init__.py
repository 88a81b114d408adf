"""A small Django project for tests/test_django.py: two apps with tasks, a real settings module.

It is imported from the tests folder (``djangoproj.settings``) and run as a
real project with ``python tests/djangoproj/manage.py``. Files go to the folder
named by ``$DJANGOPROJ_DATA``.
"""
