"""The training assets' resume settings: on by default, kept out of the library configs, one file per model."""

from pathlib import Path

from orchestration.assets.ed2 import ED2TrainingConfig
from orchestration.assets.generative import EAGERTrainingConfig
from orchestration.assets.training import ContentSASRecTrainingConfig, SASRecTrainingConfig
from orchestration.resources import ArtifactStoreResource


def test_resume_settings_reach_a_policy_and_never_the_model_config(tmp_path: Path) -> None:
    artifacts = ArtifactStoreResource(root=str(tmp_path), model_cache=str(tmp_path / "models"))
    for config_class in (SASRecTrainingConfig, ContentSASRecTrainingConfig, EAGERTrainingConfig, ED2TrainingConfig):
        config = config_class()
        library = config.library_config()
        assert config.resume and config.checkpoint_every_minutes == 10.0
        assert not hasattr(library, "resume") and not hasattr(library, "checkpoint_every_minutes")
    policy = EAGERTrainingConfig(resume=False, checkpoint_every_minutes=0).resume_policy(artifacts, "beauty", "eager")
    assert policy.path == tmp_path / "partial_training" / "beauty" / "eager.pt"
    assert (policy.every_minutes, policy.resume) == (0, False)
