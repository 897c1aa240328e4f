"""Datasets: seeded synthetic benchmark tasks and user data (arrays, NPZ, CSV) as tasks."""
from .synthetic import TASKS, Task, make_task
from .user import load_task, task_from_arrays

__all__ = ["TASKS", "Task", "make_task", "load_task", "task_from_arrays"]
