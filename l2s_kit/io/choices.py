"""The choices a user makes by name, in one table. The command line, the study, the sweep, the
tuner and the notebooks offer these and check against them; the modules that carry them out
(grading, backends, runners, the tuner, dtypes, SVDs) are built to the same names, and a test
says so.
"""

GRADERS = ("simple", "math-verify", "reference")   # normalized match; math-verify; the toolkit's
BACKENDS = ("transformers", "vllm")                # how responses are generated
RUNNERS = ("local", "ray")                         # where merge-then-evaluate jobs run
MERGE_IN = ("auto", "memory", "disk")              # where a study's merges are made
OBJECTIVES = ("shortest", "pareto")                # what l2s tune looks for
SAMPLERS = ("tpe", "nsga2")                        # Optuna's sampler for l2s tune
DTYPES = ("float32", "float64", "float16", "bfloat16")  # recipes' out_dtype, backends' --dtype
SVD_ALGORITHMS = ("auto", "exact", "randomized")   # how singular values are computed
