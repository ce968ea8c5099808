"""ray.job_config: JobConfig (tasuki's: default_actor_lifetime, ray_namespace, metadata)."""
from tasuki import JobConfig  # noqa: F401
