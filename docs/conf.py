"""Sphinx configuration of the dcgmm documentation site (``make docs``).

The build is strict: ``make docs`` runs ``sphinx-build -W --keep-going``, so any warning (a
broken docstring, a missing image, a page outside every toctree) or any gallery example that
raises fails it. Nothing here reaches the network: MathJax comes from the
``sphinx-mathjax-offline`` package, and there is no intersphinx.
"""

import os
import sys
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

# The gallery trains small models: one thread, as on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

import dcgmm  # noqa: E402  (after the thread setting)

project = "dcgmm"
author = "dcgmm developers"
copyright = "dcgmm developers, MIT licence"
release = version = dcgmm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # MathJax served from _static, not from a CDN
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "dcgmm_docs",  # docs/_ext: the CLI reference, the package index, the coverage check
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "_generated",  # included by cli.rst and api/index.rst, not pages of their own
    "examples/*.py",  # the gallery's sources; sphinx-gallery writes auto_examples/
    "examples/GALLERY_HEADER.rst",
    "**/README.txt",
]
# The gallery writes sg_execution_times.rst at the top (an orphan page); the figures of the
# results pages are referenced relatively and copied by Sphinx.

# No "smart" typography: "--resume" must stay two hyphens and 'quotes' straight, so that
# commands and flags copied from any page (the CLI reference above all) work.
smartquotes = False

# -- MyST (the markdown pages: docs/*.md, docs/results/*.md) ---------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc and napoleon (numpydoc-style docstrings, STYLE.md §8) -------------------------
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_attr_annotations = True
python_maximum_signature_line_length = 90
add_module_names = False

# -- sphinx-gallery --------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # every plot_*.py is executed at build time
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib", "dcgmm_docs.reset_torch"),
    "show_memory": False,
    "min_reported_time": 1,
    "capture_repr": ("_repr_html_",),
    "image_scrapers": ("matplotlib",),
    "plot_gallery": "True",
    "only_warn_on_example_error": False,  # an example that raises fails the build
}

# -- HTML --------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"dcgmm {release}"
html_static_path = ["_static"]
html_css_files = ["dcgmm.css"]
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}
