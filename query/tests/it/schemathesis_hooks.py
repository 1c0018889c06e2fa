"""What the sessions API's contract says that JSON Schema cannot, for schemathesis.

Loaded through SCHEMATHESIS_HOOKS by contract_fuzzing.rs. A positive test case (one
whose every parameter matches its schema) is made valid by the whole contract
(docs/api.md), so that `positive_data_acceptance` tests what the API promises:

- `cursor` is a token the service signs and hands out in `Link` headers, bound to its
  query: a generated one is never valid, so positive cases go without one;
- `start_date` must not be after `end_date`: a positive case with both has them in order;
- a project's `name` is 1 to 200 *bytes* (the schema counts characters) and not only
  whitespace: a positive creation's name is cut to 200 bytes and given a letter.

Negative cases keep whatever was generated. No failure is filtered out here.
"""

import schemathesis


def _as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _project_name(name):
    """`name` within the contract: at most 200 bytes of UTF-8, not only whitespace."""
    encoded = name.encode("utf-8")[:199]
    return "p" + encoded.decode("utf-8", errors="ignore")


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    if case.method.upper() == "POST" and isinstance(case.body, dict):
        if isinstance(case.body.get("name"), str):
            case.body["name"] = _project_name(case.body["name"])
        return case
    if not case.query:
        return case
    case.query.pop("cursor", None)
    start = _as_int(case.query.get("start_date"))
    end = _as_int(case.query.get("end_date"))
    if start is not None and end is not None and start > end:
        case.query["start_date"], case.query["end_date"] = end, start
    return case
