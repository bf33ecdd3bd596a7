"""The pipeline: a recipe run stage by stage (the runner), resumable at the first unfinished
stage. The top room: it may use every room below it, and nothing below imports it."""
