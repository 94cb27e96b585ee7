"""Weekly full retrain of every dataset in the registry."""


import dagster as dg

from orchestration.jobs import full_pipeline_job
from orchestration.presets import preset_run_config
from orchestration.resources import DatasetRegistryResource

WEEKLY_RETRAIN_CRON = "0 3 * * 1"  # Mondays 03:00


@dg.schedule(
    cron_schedule=WEEKLY_RETRAIN_CRON,
    job=full_pipeline_job,
    execution_timezone="UTC",
    description="Rebuild the whole graph for every registered dataset, one run per dataset, training to "
    "convergence (the 'converged' training preset).",
)
def weekly_full_retrain(context: dg.ScheduleEvaluationContext, registry: DatasetRegistryResource):
    """One full-pipeline run request per dataset, keyed by the scheduled time, with the converged preset."""
    tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    for dataset in registry.load().names:
        yield dg.RunRequest(
            run_key=f"{dataset}@{tick}", partition_key=dataset,
            tags={"trigger": "weekly_retrain", "training_preset": "converged"},
            run_config=preset_run_config("converged"),
        )
