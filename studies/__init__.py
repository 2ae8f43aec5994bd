"""Study definitions: one module per study, each declaring ``SPEC = hwr.study.StudySpec(...)``."""
