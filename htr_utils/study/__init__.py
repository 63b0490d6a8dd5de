"""The reproduction of Sankar et al. (AAAI 2021) built on the htr_utils library.

Data and models, training with Hessian trace regularisation, the run cache, the profiles,
the claims and their verdict rules, statistics, plots, outputs and the papermill runner.
This package imports the library (``htr_utils``); the library never imports it. Inside it, imports
go one way and at module level: :mod:`.paths` (repository, data, run cache, figures) and :mod:`.hashing`
(the run cache's key) sit at the bottom (tests/study/test_import_direction.py checks this). Its extra
dependencies come with ``pip install 'htr_utils[study]'`` (``make setup`` installs them).
"""
