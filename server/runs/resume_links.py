"""`resume_url('step')`: the template function that gives a waiting step's signed resume link.

Every step's templates may call it, so a step before a `wait_for_event` (an email) can carry
the links that resume it: `{{ resume_url('approval') }}?decision=approve`. The link is
PUBLIC_URL + `/hooks/resume/` + a token that names the execution and the step
(`server.crypto.resume_tokens`); a POST to it resumes the step once, with the query and the
body as its payload (`server.runs.wait_resumes`). A call naming no `wait_for_event` step of the
workflow, or made while PUBLIC_URL is unset, fails the step's render with a message that says
what to do.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Final

from server.crypto.aead import Keyring
from server.crypto.resume_tokens import PURPOSE, ResumeTokens
from server.engine.document import StepKind
from server.engine.planning import Graph
from server.engine.templates import RESUME_URL_FUNCTION

RESUME_PATH: Final = "/hooks/resume/"
TEMPLATE_FUNCTION: Final = RESUME_URL_FUNCTION


class ResumeLinkError(ValueError):
    """`resume_url(...)` cannot give a link; the message says why and what to do."""


@functools.lru_cache(maxsize=8)
def resume_tokens(keyring: Keyring) -> ResumeTokens:
    """The resume token signer of a keyring (its keys derived once per keyring)."""
    return ResumeTokens(keyring.derived_keys(PURPOSE))


class ResumeLinks:
    """Makes `resume_url` functions for the executions a worker runs."""

    def __init__(self, public_url: str | None, tokens: ResumeTokens) -> None:
        self._public_url = public_url
        self._tokens = tokens

    def template_function(self, execution_id: uuid.UUID, graph: Graph) -> Callable[[str], str]:
        """`resume_url(step_key)` for the templates of one execution (of version `graph`)."""

        def resume_url(step_key: object) -> str:
            if not isinstance(step_key, str):
                raise ResumeLinkError(
                    f"{TEMPLATE_FUNCTION}() takes a step key, such as "
                    f"{TEMPLATE_FUNCTION}('approval'); got {type(step_key).__name__}"
                )
            step = graph.steps.get(step_key)
            if step is None or step.kind is not StepKind.WAIT_FOR_EVENT:
                waits = [key for key, s in graph.steps.items() if s.kind is StepKind.WAIT_FOR_EVENT]
                raise ResumeLinkError(
                    f"{TEMPLATE_FUNCTION}({step_key!r}): the workflow has no wait_for_event step "
                    f"{step_key!r}; its wait_for_event steps: {', '.join(waits) or 'none'}"
                )
            if self._public_url is None:
                raise ResumeLinkError(
                    f"{TEMPLATE_FUNCTION}({step_key!r}): PUBLIC_URL is not set, so no absolute "
                    "link can be made; set PUBLIC_URL to the address people reach this server at "
                    "(https://switchyard.example.com) on the workers"
                )
            return self._public_url + RESUME_PATH + self._tokens.sign(execution_id, step_key)

        return resume_url
