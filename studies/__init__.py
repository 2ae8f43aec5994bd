"""Study definitions: one module per study, each declaring ``SPEC = hwr.tune.study.StudySpec(...)``."""
