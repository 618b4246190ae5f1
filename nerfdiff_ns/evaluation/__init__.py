"""nerfdiff-eval in parts: config, objects, method_run, memory, scoring (metrics glue), report, runner."""
