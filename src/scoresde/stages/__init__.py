"""Pipeline stages: what each `python -m scoresde <stage>` command (and Snakemake rule) runs.

Each module holds one stage; they read and write files (the library modules never do) and
take the resolved parameters as a plain dict validated by :mod:`scoresde.stages.config`.
"""
