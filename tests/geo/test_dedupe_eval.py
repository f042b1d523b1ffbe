"""geo.dedupe_eval: the labelled set is hard where it should be, and detection measures up."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
import pytest

from geo.dedupe import DEFAULT_PARAMS, HouseholdFacts
from geo.dedupe_eval import (
    COMPOUND,
    NAMESAKE_FAR,
    NAMESAKE_NEAR,
    RESURVEY,
    SAME_FAMILY_NEIGHBOUR,
    EvalSet,
    detect,
    evaluate,
    facts_from_item,
    find_candidates,
    generate_eval_set,
    grouped,
    item_name,
    metric_points,
    predicted,
)
from geo.text import fold_name, normalise_phone

SEEDS = (2026, 7, 451)


@pytest.fixture(scope="module", params=SEEDS)
def eval_set(request: pytest.FixtureRequest) -> EvalSet:
    return generate_eval_set(seed=request.param)


def by_id(eval_set: EvalSet) -> dict[str, dict]:
    return {item["id"]: item for item in eval_set.items()}


def variants_with_anchors(eval_set: EvalSet, case: str) -> list[tuple[dict, dict]]:
    """(variant, the base item it was made from) of one case."""
    items = by_id(eval_set)
    return [
        (items[variant], items[eval_set.anchors[variant]])
        for variant, found in eval_set.cases.items()
        if found == case
    ]


def metres_apart(pairs: list[tuple[dict, dict]]) -> np.ndarray:
    """Distance in metres of each (a, b)."""
    xy = metric_points([item for pair in pairs for item in pair])
    return np.hypot(*(xy[0::2] - xy[1::2]).T)


def family(item: dict) -> str:
    return fold_name(item_name(item)).split()[0]


def given_name(item: dict) -> str:
    return fold_name(item_name(item)).split()[-1]


# --- the set ---------------------------------------------------------------------------------


def test_the_set_is_deterministic_by_seed() -> None:
    one, again, other = (generate_eval_set(seed=s, resurveys=20) for s in (3, 3, 4))
    assert one == again
    assert one.labels != other.labels


def test_makeup(eval_set: EvalSet) -> None:
    makeup = eval_set.makeup()
    assert makeup[RESURVEY] >= 200 and makeup[SAME_FAMILY_NEIGHBOUR] == 80
    assert makeup[NAMESAKE_NEAR] == 40 and makeup[NAMESAKE_FAR] == 30
    assert 60 <= makeup[COMPOUND] <= 90  # 30 compounds of two or three
    assert 200 <= makeup["pairs"] <= 300 and makeup["base"] > 800
    ids = [item["id"] for item in eval_set.items()]
    assert len(ids) == len(set(ids))
    assert all(len(pair) == 2 and pair <= set(ids) for pair in eval_set.labels)
    assert set(eval_set.anchors) == set(eval_set.cases)


def test_resurveys_are_realistic_variations(eval_set: EvalSet) -> None:
    resurveys = variants_with_anchors(eval_set, RESURVEY)
    distances = metres_apart(resurveys)
    assert distances.min() >= 1.9 and distances.max() <= 25.1
    names, phones, numbers = Counter(), Counter(), Counter()
    for variant, anchor in resurveys:
        raw, first = item_name(variant), item_name(anchor)
        if raw == first:
            names["unchanged"] += 1
        elif fold_name(raw) == fold_name(first):
            names["same folded"] += 1  # lost diacritics, NFD, case, spacing
        elif len(raw.split()) == 1:
            names["given only"] += 1
        else:
            names["other"] += 1  # typos, dropped middle names, reordering
        phone, first_phone = variant["household"]["phone"], anchor["household"]["phone"]
        phones["missing"] += not phone
        phones["restyled"] += bool(phone and first_phone and phone != first_phone)
        if phone and first_phone:
            assert normalise_phone(phone) == normalise_phone(first_phone)
        number, first_number = (
            variant["household"]["house_number"],
            anchor["household"]["house_number"],
        )
        numbers["rewritten"] += bool(number and number != first_number)
    assert names["unchanged"] > 20 and names["same folded"] > 50
    assert names["given only"] > 10 and names["other"] > 30
    assert phones["missing"] > 30 and phones["restyled"] > 30 and numbers["rewritten"] > 5
    accuracies = [variant["location"]["accuracy_m"] for variant, _ in resurveys]
    assert min(accuracies) >= 3 and max(accuracies) <= 40 and max(accuracies) > 20
    other_hamlet = sum(v["hamlet_code"] != a["hamlet_code"] for v, a in resurveys)
    assert 5 <= other_hamlet <= 0.25 * len(resurveys)


def test_same_family_neighbours_live_next_door(eval_set: EvalSet) -> None:
    neighbours = variants_with_anchors(eval_set, SAME_FAMILY_NEIGHBOUR)
    distances = metres_apart(neighbours)
    assert distances.min() >= 4.9 and distances.max() <= 20.1
    for neighbour, anchor in neighbours:
        assert family(neighbour) == family(anchor) and given_name(neighbour) != given_name(anchor)
        assert neighbour["hamlet_code"] == anchor["hamlet_code"]


def test_compounds_share_a_house_number_base_and_a_family(eval_set: EvalSet) -> None:
    compounds = defaultdict(list)
    for member, anchor in variants_with_anchors(eval_set, COMPOUND):
        head, _, sub = member["household"]["house_number"].partition("/")
        assert head.isdigit() and sub.isdigit()
        assert family(member) == family(anchor)
        compounds[anchor["id"]].append(member)
    assert len(compounds) == 30
    pairs = [pair for group in compounds.values() for pair in itertools.combinations(group, 2)]
    assert metres_apart(pairs).max() <= 10.1
    for a, b in pairs:
        assert given_name(a) != given_name(b)
        assert a["household"]["house_number"] != b["household"]["house_number"]


def test_namesakes(eval_set: EvalSet) -> None:
    near = variants_with_anchors(eval_set, NAMESAKE_NEAR)
    assert metres_apart(near).max() <= 25.1
    for namesake, anchor in near:
        assert item_name(namesake) == item_name(anchor)
        phones = {normalise_phone(x["household"]["phone"]) for x in (namesake, anchor)}
        assert None not in phones and len(phones) == 2
    far = variants_with_anchors(eval_set, NAMESAKE_FAR)
    assert metres_apart(far).min() > DEFAULT_PARAMS.cap_m
    for namesake, anchor in far:
        assert item_name(namesake) == item_name(anchor)
        assert namesake["hamlet_code"] != anchor["hamlet_code"]


# --- candidates and measurement --------------------------------------------------------------


def test_find_candidates_matches_brute_force() -> None:
    eval_set = generate_eval_set(seed=5, resurveys=60)
    items = eval_set.items()
    facts = [
        facts_from_item(item, id=n, commune_code=eval_set.commune_of[item["hamlet_code"]])
        for n, item in enumerate(items)
    ]
    xy = metric_points(items)
    found = find_candidates(xy, facts)
    # Every pair at once: distances, each pair's search radius, same phone in one commune.
    distance = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    accuracy = np.array([f.accuracy_m for f in facts])
    radius = np.clip(1.5 * (accuracy[:, None] + accuracy[None, :]), 10, 60)
    key = np.array(
        [f"{f.commune_code}:{f.phone}" if f.phone else f"-{n}" for n, f in enumerate(facts)]
    )
    linked = (distance <= radius) | (key[:, None] == key[None, :])
    expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(linked, k=1)), strict=True)}
    assert set(found) == expected
    for (i, j), d in found.items():
        assert d == pytest.approx(distance[i, j])
        assert i < j


def test_a_shared_phone_reaches_beyond_the_radius_within_one_commune() -> None:
    def fact(n: int, commune: str, phone: str | None) -> HouseholdFacts:
        return HouseholdFacts(n, None, commune, "An", None, phone, None, 5.0)

    xy = np.array([[0.0, 0.0], [400.0, 0.0], [800.0, 0.0], [0.0, 8.0], [5000.0, 0.0]])
    facts = [
        fact(0, "99001", "0912345678"),
        fact(1, "99001", "0912345678"),
        fact(2, "99002", "0912345678"),  # another commune
        fact(3, "99001", None),  # next door: within the radius
        fact(4, "99001", None),
    ]
    found = find_candidates(xy, facts)
    assert set(found) == {(0, 1), (0, 3)}
    assert found[(0, 1)] == pytest.approx(400)


def test_facts_from_item_normalises_as_intake_does() -> None:
    item = {
        "id": "x",
        "hamlet_code": "99001-01",
        "location": {"lat": 9.7, "lon": 106.2, "accuracy_m": 7.5},
        "household": {
            "head_name": " Nguye\u0302\u0303n  Văn An ",
            "house_number": "",
            "phone": "+84 912 345 678",
            "kind": "residence",
        },
    }
    facts = facts_from_item(item, id=7, commune_code="99001")
    assert facts == HouseholdFacts(
        7, "99001-01", "99001", "Nguyễn Văn An", None, "0912345678", "residence", 7.5
    )


@pytest.mark.parametrize(
    ("guess", "truth", "expected"),
    [
        ({"ab", "cd"}, {"ab", "cd"}, (1.0, 1.0, 1.0, 2, 0, 0)),
        ({"ab", "ef"}, {"ab", "cd"}, (0.5, 0.5, 0.5, 1, 1, 1)),
        (set(), {"ab"}, (1.0, 0.0, 0.0, 0, 0, 1)),
        ({"ab", "cd", "ef", "gh"}, {"ab"}, (0.25, 1.0, 0.4, 1, 3, 0)),
        (set(), set(), (1.0, 1.0, 1.0, 0, 0, 0)),
    ],
)
def test_evaluate(guess: set[str], truth: set[str], expected: tuple) -> None:
    precision, recall, f1, counts = evaluate(map(frozenset, guess), map(frozenset, truth))
    assert (precision, recall, f1) == pytest.approx(expected[:3])
    assert (counts["tp"], counts["fp"], counts["fn"]) == expected[3:]


def test_grouped_closes_chains() -> None:
    pairs = {frozenset("ab"), frozenset("bc"), frozenset("xy")}
    assert grouped(pairs) == pairs | {frozenset("ac")}
    assert grouped(set()) == set()


def test_detection_meets_precision_and_recall(eval_set: EvalSet) -> None:
    scores = detect(eval_set)
    found = predicted(scores)
    precision, recall, _, counts = evaluate(found, eval_set.labels)
    assert precision >= 0.9, counts
    assert recall >= 0.9, counts
    # Every true pair close enough to compare (or sharing a phone) is a scored candidate.
    candidates = set(scores)
    assert len(eval_set.labels & candidates) >= 0.95 * len(eval_set.labels)
    # Reviewers see groups: closing predicted chains must not cost precision either.
    assert evaluate(grouped(found), grouped(eval_set.labels)).precision >= 0.9


def test_the_hard_distinct_cases_are_candidates_that_score_low(eval_set: EvalSet) -> None:
    scores = detect(eval_set)
    hard = Counter()
    for pair, score in scores.items():
        cases = {eval_set.cases.get(i, "base") for i in pair}
        if pair in eval_set.labels or cases.isdisjoint(
            {SAME_FAMILY_NEIGHBOUR, COMPOUND, NAMESAKE_NEAR}
        ):
            continue
        hard["candidates"] += 1
        hard["flagged"] += score.score >= DEFAULT_PARAMS.review_threshold
    # They are in reach of the search, so the scoring (not the radius) has to tell them apart.
    assert hard["candidates"] >= 150
    assert hard["flagged"] <= 0.05 * hard["candidates"]
