"""Tasks: what kind of prediction a model makes (see transferkit/tasks/base.py for the contract).

Imports transferkit.core and transferkit.tasks. ``TASKS`` maps the manifest's ``task`` to the task class; a new
task is one file here plus one entry below. TransferModel lives in transferkit.tasks.model.
"""
from __future__ import annotations

from transferkit.core.registry import lookup
from transferkit.tasks.base import Task
from transferkit.tasks.classification import ClassificationHead, ClassificationTask
from transferkit.tasks.multilabel import MultilabelHead, MultilabelTask
from transferkit.tasks.regression import RegressionHead, RegressionTask
from transferkit.tasks.tokens import TokensHead, TokensTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "multilabel": MultilabelTask,
                                "regression": RegressionTask, "tokens": TokensTask}


def get_task(name: str) -> Task:
    """The task called ``name`` (an UnknownNameError with the valid names and a did-you-mean otherwise)."""
    return lookup(TASKS, name, "task")()


__all__ = ["TASKS", "ClassificationHead", "ClassificationTask", "MultilabelHead", "MultilabelTask", "RegressionHead",
           "RegressionTask", "Task",
           "TokensHead", "TokensTask", "get_task"]
