"""Developer tools run by make and by the tests (not shipped to Lambda)."""
