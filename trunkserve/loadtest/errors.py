"""Typed errors of the load-test package."""


class LoadTestError(RuntimeError):
    """A load test could not run (bad option, missing corpus, Locust failed)."""


class CorpusError(LoadTestError):
    """No usable texts in the corpus file or the GLUE folder."""


class ResponseInvalid(AssertionError):
    """A response arrived but is wrong (missing output, bad shape, probabilities not summing to 1)."""
