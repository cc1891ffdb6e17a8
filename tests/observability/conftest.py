from tests.harness import mesh  # noqa: F401  (session fixture: real service processes, for the scrape test)
