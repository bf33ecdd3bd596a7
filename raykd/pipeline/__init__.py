"""The pipeline: a recipe run stage by stage (the runner), resumable at the first unfinished
stage; a stage is its registered steps (`steps/`), and kinds are known through registries
(`kinds.py`). The top room: it may use every room below it, and nothing below imports it."""
