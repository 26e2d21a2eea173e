"""One unified-format test as a pytest test, with the witness rule of tests/spec/README.md: a test
that fails on an answer from the server runs again through PyMongo's own client; only if PyMongo
gets the very same answer is the failure the server's (a skip when the server lacks the feature, a
strict expected failure otherwise)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.spec.unified import LACKS_FEATURE_CODES, Driver, SpecFailure, SpecRun, SpecSkip


_WITNESS_TIMEOUT = 60.0


async def _witness(case: Any, facts: Any, uri: str, witness: Driver) -> SpecFailure | str:
    """The same test through PyMongo: its failure, or what became of it otherwise."""
    try:
        # PyMongo may wait forever where asyncmongo's timeout ended the wait (a change stream's
        # next without CSOT): the witness gets a bound of its own.
        await asyncio.wait_for(SpecRun(case, facts, witness, uri).run(), _WITNESS_TIMEOUT)
    except asyncio.TimeoutError:
        return f"{witness.name} did not finish in {_WITNESS_TIMEOUT:.0f} s"
    except SpecFailure as exc:
        return exc
    except SpecSkip as exc:
        return f"skipped under {witness.name} ({exc})"
    except Exception as exc:  # the witness broke elsewhere: it says nothing about the server
        return f"{witness.name} failed differently ({type(exc).__name__}: {exc})"
    return f"{witness.name} passes this test"


async def run_case(case: Any, facts: Any, uri: str, request: Any, driver: Driver,
                   witness: Driver, known: dict[str, tuple[str, tuple[str, ...]]] | None = None,
                   ) -> None:
    """``known``: tests known to fail for a reason that is not the server's (test id -> (why,
    what the failure message must say)): a test whose data contradict their specification, or
    what the driver cannot do. They are strict expected failures, and only for that failure:
    any other is a real one."""
    why = facts.unmet(case.spec.get("runOnRequirements")) or facts.unmet(
        case.test.get("runOnRequirements")
    )
    if why:
        pytest.skip(why)
    if known and case.id in known:
        reason, says = known[case.id]
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason,
                                                  raises=SpecFailure))
        try:
            await SpecRun(case, facts, driver, uri).run()
        except SpecFailure as exc:
            if not all(text in str(exc) for text in says):
                raise RuntimeError(f"fails otherwise than known ({reason}): {exc}") from exc
            raise
        return
    try:
        await SpecRun(case, facts, driver, uri).run()
    except SpecSkip as exc:
        pytest.skip(str(exc))
    except SpecFailure as ours:
        if ours.signature is None:
            raise  # the client's own doing: no server can excuse it
        theirs = await _witness(case, facts, uri, witness)
        if not isinstance(theirs, SpecFailure) or theirs.signature != ours.signature:
            said = theirs if isinstance(theirs, str) else f"{witness.name}: {theirs}"
            raise SpecFailure(ours.where, f"{ours.message}; but {said}") from ours
        same = f"{witness.name} gets the same answer"
        if ours.code in LACKS_FEATURE_CODES:
            pytest.skip(f"the server lacks it: {ours.answer} ({same})")
        reason = f"server deviates from MongoDB at {ours.where}: {ours.answer} ({same})"
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))
        raise
