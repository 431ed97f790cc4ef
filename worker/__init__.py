"""Celery workers: scoring (queue ``scoring``) and training (queue ``training``). Tasks stay thin and call backend services."""
