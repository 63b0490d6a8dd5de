"""The reproduction of Sankar et al. (AAAI 2021) built on the htr_utils library.

Data and models, training with Hessian trace regularisation, the run cache, the profiles,
the claims and their verdict rules, statistics, plots, outputs and the papermill runner.
This package imports the library (``htr_utils``); the library never imports it. Its extra
dependencies come with ``pip install 'htr_utils[study]'`` (``make setup`` installs them).
"""
