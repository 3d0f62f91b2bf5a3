"""The workflow runtime: how executions start, how their steps run, and their SQL.

Follow one step from claim to commit:
- `intake.py` starts executions, the one way (every trigger and manual runs): one statement
  records the event, its executions, their entry steps and the entry steps' jobs. Executions
  over a workflow's concurrency limit or a schedule's overlap policy wait held or are skipped
  (`concurrency.py`, under the per-group locks of `groups.py`) and are admitted in order when
  one of their group ends (`admission.py`).
- The worker role (`server.worker`, a generic job runner) claims a `workflow_step` job
  (`jobs.py`) and calls `step_runner.StepRunner`: `store.start_step` marks the step running
  and reads its inputs; `step_kinds.py` runs it (an action gets `action_contexts.py`); the
  engine (`server.engine.planning`) plans what follows and decides the execution's status;
  `store.settle_step` records the result and the plan and settles the job in one statement
  (or the long way, in one transaction). The job's end is `server.queue.handlers.JobContext`.
- Flow steps (`flow_steps.py`; the story is in `waits.py`) start what they wait for with
  their WAITING record and are resumed exactly once: `calls.py` (call_workflow, foreach:
  child executions), `event_waits.py` with `wait_resumes.py` and `resume_links.py`
  (wait_for_event: events, the resume API, signed links, timeouts). An execution's end
  enqueues an `execution_ended` job (a database trigger) whose handler
  (`execution_ended.py`) moves the parent's waiting step on, admits held executions and
  starts the failure workflow.
- `sql.py` holds every runtime statement with named parameters and what each locks;
  `store.py` runs them and returns structs.
- `control.py` cancels and retries executions and fails those whose step job died;
  `replay.py` accepts a recorded event again; `event_fan_out.py` fans out database changes.

Pure rules live in `server.engine`; the queue (claims, leases, retries) in `server.queue`.
"""
