"""Project code beside the DAGs: the framework-free core (``mlops``), pipeline specs, expectation suites."""
