import pytest

from workers.tasks.default import ping


@pytest.mark.slow
def test_a_real_worker_runs_a_task_through_the_broker(celery_worker_process):
    from django.db import connection

    result = ping.delay("hello")
    value = result.get(timeout=60)
    assert value["payload"] == "hello"
    assert value["database"] == connection.settings_dict["NAME"]
    # ran in the worker's prefork child (as under make demo and docker-compose), not here
    import psutil

    assert value["pid"] != celery_worker_process.pid
    assert psutil.Process(value["pid"]).ppid() == celery_worker_process.pid
    from django_celery_results.models import TaskResult

    assert TaskResult.objects.get(task_id=result.id).status == "SUCCESS"


def test_tasks_are_routed_by_name():
    from workers.celery import app

    router = app.amqp.router
    assert router.route({}, "workers.tasks.media.import_pairs")["queue"].name == "media"
    assert router.route({}, "workers.tasks.default.ping")["queue"].name == "default"
    assert router.route({}, "workers.tasks.gpu.anything")["queue"].name == "gpu"
