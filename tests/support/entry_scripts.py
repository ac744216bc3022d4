"""Module entry scripts for tests: ``init`` keeps the context's model, ``run`` is the test's own body."""

from __future__ import annotations

import textwrap

TEMPLATE = '''{imports}
_model = None


def init(context):
    global _model
    _model = context.model


def run(inputs):
{body}'''


def entry_script(run_body: str, *, imports: str = "") -> str:
    """The source of an entry script whose ``run(inputs)`` is ``run_body`` (it may use ``_model``)."""
    return TEMPLATE.format(imports=imports, body=textwrap.indent(textwrap.dedent(run_body).strip("\n"), "    ") + "\n")
