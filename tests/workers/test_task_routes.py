"""The one map of which task runs each job kind (``workers.task_routes``) agrees with the registered tasks and the
queue routing, and the services send tasks by name instead of importing the task modules."""

from tests.workers.test_import_graph import import_graph
from workers.models import Job
from workers.task_routes import JOB_TASKS, PIPELINE_FINISH_TASK, PIPELINE_STAGE_TASKS, WEBHOOK_DELIVERY_TASK

ROUTES = [*JOB_TASKS.values(), *PIPELINE_STAGE_TASKS.values(), PIPELINE_FINISH_TASK, WEBHOOK_DELIVERY_TASK]


def test_every_job_kind_has_a_registered_task_on_the_queue_its_name_routes_to():
    import workers.tasks  # noqa: F401  (registers the tasks, as the worker's autodiscovery does)
    from workers.celery import app

    assert set(JOB_TASKS) == set(Job.Kind.values)
    for route in ROUTES:
        assert route.task in app.tasks, f"{route.task} is not a registered task"
        assert app.amqp.router.route({}, route.task)["queue"].name == route.queue, route


def test_the_pipeline_stages_run_in_the_chains_order():
    from workers.services.pipelines import STAGE_QUEUES, pipeline_canvas

    assert list(PIPELINE_STAGE_TASKS) == list(STAGE_QUEUES) == ["export", "reward", "align", "generate"]
    names = [task.task for task in pipeline_canvas(1).tasks]
    assert names == [route.task for route in PIPELINE_STAGE_TASKS.values()] + [PIPELINE_FINISH_TASK.task]


def test_services_never_import_the_task_modules():
    graph = import_graph()
    offenders = {
        module: sorted(target for target in targets if target.startswith("workers.tasks"))
        for module, targets in graph.items()
        if not module.startswith("workers.tasks")
    }
    assert {module: targets for module, targets in offenders.items() if targets} == {}
