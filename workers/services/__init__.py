"""Writes of the workers app.

- ``jobs``: the job lifecycle (create and queue by kind, start, finish, fail, cancel, retry, resend, watchdog);
- one module per kind of job, each with both sides of it: ``<name>_job_create`` (the web side: check the inputs,
  record the job, queue its task by name) and ``<name>_work`` (the worker side, run by ``job_execute``):
  ``imports`` (import), ``snapshots`` (export), ``reward`` (reward), ``alignment`` (sft, flow_dpo, flow_rwr,
  latent_reward), ``generation`` (generate), ``previews`` (preview);
- ``training`` (what the training kinds share) and ``launch`` (the child process a training or sampling job runs in);
- ``pipelines`` (export → reward → alignment → generate as a chain of stage tasks) and ``webhooks``.

Which task runs each kind, on which queue: ``workers.task_routes``.
"""
