"""ray.tests: only the helper modules Ray's public-API tests import from it (stand-ins written for tasuki)."""
