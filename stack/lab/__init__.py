"""A lab: its plan, start and teardown, its faults, the load client and prober, the scenario
runner and the metrics scraper."""
