"""geo.dedupe: search radius, each piece of scoring evidence, exact re-captures, grouping."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math
import unicodedata
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geo.dedupe
from geo.dedupe import (
    DEFAULT_PARAMS,
    DedupeParams,
    DedupeWeights,
    HouseholdFacts,
    PairScore,
    Reason,
    accuracy_radius_m,
    group_pairs,
    max_search_radius_m,
    may_reach,
    name_keys,
    reachable,
    score_pair,
    search_radius_m,
)

THRESHOLD = DEFAULT_PARAMS.review_threshold
NAME = "Nguyễn Văn An"


def facts(id: int = 1, **changes: Any) -> HouseholdFacts:
    """A household in hamlet 99001-01; ``changes`` override fields."""
    base = HouseholdFacts(
        id=id,
        hamlet_code="99001-01",
        commune_code="99001",
        head_name=NAME,
        house_number="12/3",
        phone="0912345678",
        kind="residence",
        accuracy_m=6.0,
    )
    return dataclasses.replace(base, **changes)


def pair(distance_m: float = 4.0, **changes: Any) -> PairScore:
    """Score the reference household against a copy with ``changes``."""
    return score_pair(facts(1), facts(2, **changes), distance_m)


def reason(score: PairScore, prefix: str) -> Reason:
    """The one reason whose code starts with ``prefix``."""
    [found] = [r for r in score.reasons if r.code.startswith(prefix)]
    return found


def name_reason(a: str | None, b: str | None) -> Reason:
    found = score_pair(facts(1, head_name=a), facts(2, head_name=b), 4.0).reasons
    [name] = [r for r in found if r.code.startswith(("name_", "family_", "middle_"))]
    return name


def test_doctests() -> None:
    result = doctest.testmod(geo.dedupe)
    assert result.attempted > 0
    assert result.failed == 0


# --- search radius ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acc_a", "acc_b", "expected"),
    [
        (3.0, 3.0, 10.0),  # floor: 1.5 × 6 = 9 < 10
        (6.5, 6.5, 19.5),
        (10.0, 5.0, 22.5),
        (40.0, 35.0, 60.0),  # cap
        (None, 4.0, 36.0),  # a missing accuracy counts as 20 m
        (None, None, 60.0),
        (0.0, 0.0, 10.0),
    ],
)
def test_search_radius(acc_a: float | None, acc_b: float | None, expected: float) -> None:
    assert search_radius_m(acc_a, acc_b) == pytest.approx(expected)
    assert search_radius_m(acc_b, acc_a) == pytest.approx(expected)


def test_search_radius_follows_the_params() -> None:
    params = DedupeParams(floor_m=15, k=2, cap_m=40, default_accuracy_m=10)
    assert search_radius_m(3, 3, params) == 15
    assert search_radius_m(8, 4, params) == 24
    assert search_radius_m(None, 12, params) == 40
    assert max_search_radius_m(params) == 40
    assert max_search_radius_m(DedupeParams(k=0, floor_m=12)) == 12


@given(
    st.one_of(st.none(), st.floats(0, 500)),
    st.one_of(st.none(), st.floats(0, 500)),
    st.floats(1, 50),
    st.floats(0, 5),
    st.floats(1, 200),
)
def test_max_search_radius_bounds_every_pair(
    acc_a: float | None, acc_b: float | None, floor_m: float, k: float, cap_m: float
) -> None:
    params = DedupeParams(floor_m=floor_m, k=k, cap_m=cap_m)
    assert 0 < search_radius_m(acc_a, acc_b, params) <= max_search_radius_m(params)


def test_accuracy_radius_adds_in_quadrature_with_a_floor() -> None:
    assert accuracy_radius_m(6, 8) == pytest.approx(10)
    assert accuracy_radius_m(1, 1) == 5.0
    assert accuracy_radius_m(None, 0) == 20.0


@pytest.mark.parametrize(
    "changes",
    [
        {"floor_m": 0},
        {"cap_m": -1},
        {"k": -0.5},
        {"review_threshold": 0},
        {"review_threshold": 1.5},
        {"auto_link_threshold": 0},
        {"default_accuracy_m": 0},
    ],
)
def test_params_refuse_nonsense(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DedupeParams(**changes)


def test_default_params() -> None:
    params = DedupeParams()
    assert (params.floor_m, params.k, params.cap_m) == (10, 1.5, 60)
    assert params.auto_link is False
    assert 0 < params.review_threshold < params.auto_link_threshold <= 1


# --- distance --------------------------------------------------------------------------------


def test_distance_within_both_accuracies_is_strong_evidence() -> None:
    near = reason(pair(2.0), "distance_")
    edge = reason(pair(8.0), "distance_")  # accuracy radius hypot(6, 6) ≈ 8.5 m
    assert near.code == edge.code == "distance_within_accuracy"
    assert near.value > edge.value > 0


def test_distance_beyond_the_accuracies_is_weaker_and_scaled() -> None:
    edge = reason(pair(8.0), "distance_")
    beyond = reason(pair(12.0), "distance_")
    further = reason(pair(17.0), "distance_")
    assert beyond.code == further.code == "distance_beyond_accuracy"
    assert edge.value > beyond.value > further.value


def test_the_same_gap_counts_for_more_with_better_accuracy() -> None:
    sharp = score_pair(facts(1, accuracy_m=3.0), facts(2, accuracy_m=3.0), 9.0)
    blurred = score_pair(facts(1, accuracy_m=15.0), facts(2, accuracy_m=15.0), 9.0)
    assert reason(sharp, "distance_").code == "distance_beyond_accuracy"
    assert reason(blurred, "distance_").code == "distance_within_accuracy"
    assert reason(blurred, "distance_").value > reason(sharp, "distance_").value


def test_distance_beyond_the_search_radius_counts_against() -> None:
    far = reason(pair(400.0), "distance_")
    assert far.code == "distance_far"
    assert far.value < 0
    assert far.value >= DEFAULT_PARAMS.weights.far_min


@given(st.floats(0, 2000), st.floats(0, 2000))
def test_score_never_rises_with_distance(d1: float, d2: float) -> None:
    near, far = sorted((d1, d2))
    assert (
        pair(near, head_name="Nguyễn Văn Bình").score
        >= pair(far, head_name="Nguyễn Văn Bình").score
    )


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("other", "code"),
    [
        (NAME, "name_same"),
        (unicodedata.normalize("NFD", NAME), "name_same"),
        ("Nguyen Van An", "name_same"),  # lost diacritics
        ("  NGUYỄN   văn an ", "name_same"),  # case and spacing
        ("Nguyễn Văn Ân", "name_same"),  # a tone only on one side is a lost mark
        ("An Nguyễn Văn", "name_tokens_reordered"),
        ("An", "name_given_only"),
        ("Văn An", "name_given_only"),
        ("Ngyuen Van An", "name_similar"),  # typo in the family name
        ("Nguyễn An", "name_similar"),  # middle name left out
        ("Nguyễn V. An", "name_similar"),  # middle name abbreviated
        ("Nguyễn Vn An", "name_similar"),  # typo in the middle name
        ("Nguyễn Văn Anh", "name_similar"),  # one letter off, both real names
        ("Nguyễn Hữu An", "middle_name_differs"),
        ("Nguyễn Văn Bình", "family_name_only"),
        ("Nguyễn Thị Bích", "family_name_only"),
        ("Trần Văn An", "name_differs"),
        ("Lê Thị Hoa", "name_differs"),
        ("Bình", "name_differs"),
    ],
)
def test_name_evidence(other: str, code: str) -> None:
    assert name_reason(NAME, other).code == code
    assert name_reason(other, NAME).code == code


def test_name_evidence_is_ordered_by_strength() -> None:
    value = {
        label: name_reason(NAME, other).value
        for label, other in [
            ("same", "nguyen van an"),
            ("reordered", "An Nguyễn Văn"),
            ("similar", "Ngyuen Van An"),
            ("given_only", "An"),
            ("middle_differs", "Nguyễn Hữu An"),
            ("family_only", "Nguyễn Văn Bình"),
            ("differs", "Trần Văn Bình"),
        ]
    }
    assert value["same"] > value["reordered"] > value["similar"] > value["given_only"]
    assert value["given_only"] > value["middle_differs"] > value["family_only"] > value["differs"]


def test_given_name_typo_that_is_no_syllable_counts_more_than_a_real_other_name() -> None:
    typo = name_reason("Nguyễn Văn Đạt", "Nguyễn Văn Đt")
    other = name_reason("Nguyễn Văn Lan", "Nguyễn Văn Loan")
    assert typo.code == other.code == "name_similar"
    assert typo.value > other.value > 0


def test_a_shared_common_family_name_is_weaker_than_a_rare_one() -> None:
    common = name_reason("Nguyễn Văn An", "Nguyễn Văn Bình")
    rare = name_reason("Châu Văn An", "Châu Văn Bình")
    differs = name_reason("Nguyễn Văn An", "Trần Văn Bình")
    assert common.code == rare.code == "family_name_only"
    assert differs.value < common.value < rare.value < 0


@pytest.mark.parametrize(
    ("a", "b", "code"),
    [
        ("Huỳnh Văn An", "Hoàng Văn An", "name_similar"),  # one name, two regional spellings
        ("Võ Thị Hoa", "Vũ Thị Hoa", "name_similar"),
        ("Phan Văn An", "Phạm Văn An", "name_differs"),  # two real family names
        ("Lê Văn An", "Lý Văn An", "name_differs"),
    ],
)
def test_family_name_variants_and_near_misses(a: str, b: str, code: str) -> None:
    assert name_reason(a, b).code == code


def test_different_diacritics_on_both_sides_weaken_a_folded_match() -> None:
    clash = name_reason("Nguyễn Văn Hùng", "Nguyễn Văn Hưng")
    same = name_reason("Nguyễn Văn Hùng", "Nguyen Van Hung")
    assert clash.code == "name_diacritics_differ"
    assert same.code == "name_same"
    assert 0 < clash.value < same.value


@pytest.mark.parametrize(("a", "b"), [(NAME, None), (None, NAME), ("", NAME), (" . ", NAME)])
def test_a_missing_name_is_neutral(a: str | None, b: str | None) -> None:
    missing = name_reason(a, b)
    assert missing.code == "name_missing"
    assert missing.value == 0


# --- phone, house number, kind, place --------------------------------------------------------


def test_the_same_phone_is_strong_evidence_and_different_phones_strongly_against() -> None:
    same = pair(phone="0912345678")
    missing = pair(phone=None)
    other = pair(phone="0987654321")
    assert reason(same, "phone_").code == "phone_same"
    assert reason(other, "phone_").code == "phone_differs"
    assert not [r for r in missing.reasons if r.code.startswith("phone_")]
    assert reason(same, "phone_").value >= 3 and reason(other, "phone_").value <= -3
    assert same.score > missing.score > other.score


@pytest.mark.parametrize(
    ("a", "b", "code"),
    [
        ("12/3", "12/3", "house_number_same"),
        ("12/3", " 12 / 3 ", "house_number_same"),
        ("12/3A", "Số 12/3a", "house_number_same"),
        ("Tổ 5", "to 5", "house_number_same"),
        ("12/1", "12/2", "house_number_differs"),  # one compound, two households
        ("12/3", "123", "house_number_differs"),
        ("12", "14", "house_number_differs"),
        ("12/3", None, None),
        ("", "12/3", None),
    ],
)
def test_house_number_evidence(a: str | None, b: str | None, code: str | None) -> None:
    found = [
        r.code
        for r in score_pair(facts(1, house_number=a), facts(2, house_number=b), 4.0).reasons
        if r.code.startswith("house_")
    ]
    assert found == ([code] if code else [])


def test_house_number_values() -> None:
    same = reason(pair(house_number="12/3"), "house_")
    group = reason(
        score_pair(facts(1, house_number="Tổ 5"), facts(2, house_number="Tổ 5"), 4), "house_"
    )
    differs = reason(pair(house_number="12/4"), "house_")
    assert same.value > group.value >= 0 > differs.value


def test_a_different_kind_counts_against() -> None:
    other = pair(kind="business")
    assert reason(other, "kind_").code == "kind_differs"
    assert reason(other, "kind_").value < 0
    assert other.score < pair().score
    assert not [r for r in pair(kind=None).reasons if r.code == "kind_differs"]


def test_claimed_units() -> None:
    hamlet = pair(hamlet_code="99001-02")
    commune = pair(hamlet_code="99002-01", commune_code="99002")
    assert "different_hamlet" in hamlet.codes() and "different_commune" not in hamlet.codes()
    assert "different_commune" in commune.codes() and "different_hamlet" not in commune.codes()
    assert reason(commune, "different_").value < reason(hamlet, "different_").value < 0


# --- whole pairs -----------------------------------------------------------------------------

RESURVEYS = [
    # A second capture of one household, as field teams write it: must reach review.
    (8.0, {"head_name": "nguyen van an", "phone": "0912345678", "accuracy_m": 12.0}),
    (14.0, {"head_name": unicodedata.normalize("NFD", NAME), "phone": None}),
    (6.0, {"head_name": "An", "phone": None, "house_number": None}),
    (11.0, {"head_name": "Nguyễn Văn Aan", "phone": None, "house_number": None}),
    (20.0, {"head_name": "NGUYỄN VĂN AN", "phone": None, "accuracy_m": 15.0}),
    (9.0, {"head_name": "Nguyễn An", "phone": None, "hamlet_code": "99001-02"}),
    (400.0, {"head_name": "Nguyễn V. An"}),  # same phone, far apart: phone-match candidate
]
DISTINCT = [
    # Look-alike neighbours: must stay below the review threshold.
    (12.0, {"head_name": "Nguyễn Văn Bình", "phone": "0987654321", "house_number": "14"}),
    (8.0, {"head_name": "Nguyễn Thị Bích", "phone": None, "house_number": None}),
    (5.0, {"head_name": "Nguyễn Hữu Phước", "phone": None, "house_number": "12/4"}),
    (15.0, {"head_name": NAME, "phone": "0987654321", "house_number": "16"}),  # namesake
    (6.0, {"head_name": "Nguyễn Văn Tâm", "phone": "0912345678", "house_number": "12/4"}),
    (400.0, {"head_name": "Trần Thị Lan"}),  # same phone, another person far away
]


@pytest.mark.parametrize(("distance_m", "changes"), RESURVEYS)
def test_resurveys_reach_review(distance_m: float, changes: dict[str, Any]) -> None:
    assert pair(distance_m, **changes).score >= THRESHOLD


@pytest.mark.parametrize(("distance_m", "changes"), DISTINCT)
def test_look_alike_neighbours_stay_below_review(
    distance_m: float, changes: dict[str, Any]
) -> None:
    assert pair(distance_m, **changes).score < THRESHOLD


def test_the_score_is_the_logistic_of_prior_plus_reasons() -> None:
    result = pair(9.0, head_name="Nguyễn Văn Bình", phone=None)
    logit = DEFAULT_PARAMS.weights.prior + sum(r.value for r in result.reasons)
    assert result.score == pytest.approx(1 / (1 + math.exp(-logit)))


def test_weights_are_configurable() -> None:
    timid = DedupeParams(weights=DedupeWeights(phone_same=0.0))
    base = score_pair(facts(1), facts(2, head_name="Trần Văn Bình"), 4.0)
    tuned = score_pair(facts(1), facts(2, head_name="Trần Văn Bình"), 4.0, timid)
    assert reason(tuned, "phone_").value == 0.0
    assert tuned.score < base.score


def test_reasons_are_json_ready() -> None:
    result = pair(9.0, head_name="Nguyen Van An", kind="business", hamlet_code="99001-02")
    payload = json.loads(json.dumps(result.as_dict(), ensure_ascii=False))
    assert payload["score"] == pytest.approx(result.score, abs=1e-4)
    assert [r["code"] for r in payload["reasons"]] == list(result.codes())
    for item in payload["reasons"]:
        assert set(item) == {"code", "value", "message"}
        assert item["code"].isascii() and item["message"]


NAMES = st.sampled_from(
    [NAME, "Nguyen Van An", "An", "Nguyễn Văn Anh", "Nguyễn Thị Bích", "Trần Văn An", "", None]
)
FACTS = st.builds(
    HouseholdFacts,
    id=st.integers(1, 100),
    hamlet_code=st.sampled_from(["99001-01", "99001-02", None]),
    commune_code=st.sampled_from(["99001", "99002", None]),
    head_name=NAMES,
    house_number=st.sampled_from(["12/3", "12/4", "Tổ 5", "", None]),
    phone=st.sampled_from(["0912345678", "0987654321", None]),
    kind=st.sampled_from(["residence", "business", None]),
    accuracy_m=st.one_of(st.none(), st.floats(0, 100)),
)


@settings(max_examples=200)
@given(FACTS, FACTS, st.floats(0, 5000))
def test_scores_are_probabilities_and_symmetric(
    a: HouseholdFacts, b: HouseholdFacts, distance_m: float
) -> None:
    forward, backward = score_pair(a, b, distance_m), score_pair(b, a, distance_m)
    assert 0.0 <= forward.score <= 1.0
    assert forward.score == pytest.approx(backward.score)
    assert sorted(forward.codes()) == sorted(backward.codes())
    assert forward.exact == backward.exact


# --- exact re-captures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distance_m", "changes", "exact"),
    [
        (2.0, {}, True),
        (4.0, {"head_name": "NGUYEN  van an"}, True),
        (5.0, {"accuracy_m": 3.0, "house_number": None}, True),  # the 5 m floor
        (9.0, {"accuracy_m": 12.0}, False),  # beyond the better accuracy (6 m)
        (6.0, {"accuracy_m": 3.0}, False),
        (2.0, {"phone": None}, False),
        (2.0, {"phone": "0987654321"}, False),
        (2.0, {"head_name": "An"}, False),
        (2.0, {"head_name": "Nguyễn Văn Anh"}, False),
        (2.0, {"house_number": "12/4"}, False),
        (2.0, {"kind": "business"}, False),
    ],
)
def test_exact_recaptures(distance_m: float, changes: dict[str, Any], exact: bool) -> None:
    assert pair(distance_m, **changes).exact is exact


def test_exact_needs_the_auto_link_threshold() -> None:
    strict = DedupeParams(auto_link_threshold=1.0)
    assert score_pair(facts(1), facts(2), 2.0, strict).exact is False


# --- groups ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], {}),
        ([(1, 2)], {1: 1, 2: 1}),
        ([(2, 1)], {1: 1, 2: 1}),
        ([(1, 2), (2, 3)], {1: 1, 2: 1, 3: 1}),  # A~B, B~C: one group
        ([(5, 9), (3, 9), (7, 8)], {3: 3, 5: 3, 9: 3, 7: 7, 8: 7}),
        ([(4, 4)], {4: 4}),
        ([(1, 2), (1, 2), (2, 1)], {1: 1, 2: 1}),
        ([(10, 11), (12, 13), (11, 12)], {10: 10, 11: 10, 12: 10, 13: 10}),
    ],
)
def test_group_pairs(pairs: list[tuple[int, int]], expected: dict[int, int]) -> None:
    assert group_pairs(pairs) == expected


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=40))
def test_group_pairs_matches_connected_components(pairs: list[tuple[int, int]]) -> None:
    links: dict[int, set[int]] = defaultdict(set)
    for a, b in pairs:
        links[a].add(b)
        links[b].add(a)
    expected: dict[int, int] = {}
    for start in sorted(links):
        if start in expected:
            continue
        component, frontier = {start}, [start]
        while frontier:
            for other in links[frontier.pop()] - component:
                component.add(other)
                frontier.append(other)
        expected.update(dict.fromkeys(component, min(component)))
    assert group_pairs(pairs) == expected
    assert group_pairs(reversed(pairs)) == expected


def test_group_pairs_handles_long_chains() -> None:
    chain = [(i + 1, i) for i in range(20_000)]
    groups = group_pairs(chain)
    assert set(groups.values()) == {0} and len(groups) == 20_001


_NAMES = st.sampled_from(
    [
        "Nguyễn Văn An",
        "Nguyễn V. An",
        "Trần Văn An",
        "Nguyễn Văn Ab",
        "Nguyễn Văn",
        "Nguyen Van An",
        "An",
        "Văn An Nguyễn",
        "Nguyễn Văn Anh",
        "Nguyễn Thị An",
        "Trần Thị Bình",
        "Nguyễn Dt",
        "Nguyễn Đạt",
        "Lê Hùng",
        "Lê Hưng",
        "",
    ]
)
_PHONES = st.sampled_from(["0912345678", "0987654321", None])


@settings(max_examples=400, deadline=None, database=None)
@given(
    name_a=_NAMES,
    name_b=_NAMES,
    phone_a=_PHONES,
    phone_b=_PHONES,
    house=st.sampled_from(["12", "12/3", None]),
    distance=st.sampled_from([0.0, 3.0, 9.0, 30.0]),
)
def test_the_prefilter_never_drops_a_pair_that_could_qualify(
    name_a: str,
    name_b: str,
    phone_a: str | None,
    phone_b: str | None,
    house: str | None,
    distance: float,
) -> None:
    a = HouseholdFacts(1, "h", "c", name_a, house, phone_a, "residence", 5.0)
    b = HouseholdFacts(2, "h", "c", name_b, house, phone_b, "residence", 5.0)
    if not may_reach(a, b):
        assert score_pair(a, b, distance).score < DEFAULT_PARAMS.review_threshold


@settings(max_examples=200, deadline=None, database=None)
@given(
    households=st.lists(st.tuples(_NAMES, _PHONES), min_size=2, max_size=12),
    data=st.data(),
)
def test_the_array_prefilter_is_the_scalar_one(
    households: list[tuple[str, str | None]], data: st.DataObject
) -> None:
    people = [
        HouseholdFacts(i, "h", "c", name, "12", phone, "residence", 5.0)
        for i, (name, phone) in enumerate(households)
    ]
    index = st.integers(0, len(people) - 1)
    pairs = data.draw(st.lists(st.tuples(index, index), min_size=1, max_size=30))
    a = np.array([i for i, _ in pairs], dtype=np.int64)
    b = np.array([j for _, j in pairs], dtype=np.int64)
    phone_keys = {p: k for k, p in enumerate(sorted({p for _, p in households if p}))}
    phones = np.array([phone_keys.get(p, -1) if p else -1 for _, p in households])
    names = name_keys([name for name, _ in households])
    found = reachable(a, b, names=names, phones=phones)
    assert found.tolist() == [may_reach(people[i], people[j]) for i, j in pairs]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pair_search_finds_exactly_the_pairs_within_their_radius(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    # ~300 m square near Cao Lãnh: dense enough for every band pair to meet.
    lon = 105.63 + rng.uniform(0, 0.003, n)
    lat = 10.46 + rng.uniform(0, 0.003, n)
    accuracy = rng.choice([3.0, 6.5, 8.0, 12.0, 15.0, 25.0, 40.0, np.nan], n)
    i, j, d = geo.dedupe.pairs_within_radius(lon, lat, accuracy)
    expected = set()
    for a in range(n):
        for b in range(a + 1, n):
            acc_a = None if np.isnan(accuracy[a]) else float(accuracy[a])
            acc_b = None if np.isnan(accuracy[b]) else float(accuracy[b])
            metres = float(geo.dedupe.local_metres(lon[a], lat[a], lon[b], lat[b]))
            if metres <= search_radius_m(acc_a, acc_b):
                expected.add((a, b))
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected
    assert len(i) == len(expected)  # each pair once
    assert np.all(i < j)
    assert np.allclose(d, geo.dedupe.local_metres(lon[i], lat[i], lon[j], lat[j]))


def test_pair_search_holds_from_the_south_to_the_north_of_vietnam() -> None:
    # A degree of longitude is 8 % shorter at 23.3° N than at 8.6° N: measured at the mean
    # latitude, the northern pair would look 61.7 m apart and fall outside the 60 m cap.
    lat = np.array([8.6, 8.6, 23.3, 23.3])
    east_m = np.array([0.0, 59.0, 0.0, 59.0])
    lon = 105.0 + east_m / (geo.dedupe.M_PER_DEG_LON * np.cos(np.radians(lat)))
    i, j, d = geo.dedupe.pairs_within_radius(lon, lat, [40.0] * 4)
    assert (i.tolist(), j.tolist()) == ([0, 2], [1, 3])
    assert d.round(3).tolist() == [59.0, 59.0]


@pytest.mark.parametrize("seed", [1, 2])
def test_pair_search_over_a_wide_latitude_range_is_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Clusters of points from 8° N to 23.4° N, each ~100 m across; accuracies on the band
    # edges, where a pair's radius is the largest its bands can have.
    centres = rng.uniform(8.0, 23.4, 30)
    lat = np.repeat(centres, 12) + rng.uniform(0, 0.0009, 360)
    lon = 105.0 + rng.uniform(0, 0.0009, 360)
    accuracy = rng.choice([3.0, 8.0, 15.0, 40.0], 360)
    i, j, _ = geo.dedupe.pairs_within_radius(lon, lat, accuracy)
    expected = {
        (a, b)
        for a in range(360)
        for b in range(a + 1, 360)
        if float(geo.dedupe.local_metres(lon[a], lat[a], lon[b], lat[b]))
        <= search_radius_m(float(accuracy[a]), float(accuracy[b]))
    }
    assert len(expected) > 100
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected


@pytest.mark.parametrize("seed", [1, 2])
def test_search_metres_never_overstate_a_distance(seed: int) -> None:
    """The k-d tree's metres (service and eval_dedupe's baseline) never exceed local_metres,
    so a tree query with a pair's radius finds the pair, from 8° N to 23.4° N."""
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(8.0, 23.4, 400), rng.uniform(102.0, 109.5, 400)
    xy = geo.dedupe.search_metres(lon, lat)
    a, b = np.triu_indices(400, k=1)
    tree_m = np.hypot(*(xy[a] - xy[b]).T)
    assert np.all(tree_m <= geo.dedupe.local_metres(lon[a], lat[a], lon[b], lat[b]) + 1e-6)
    assert geo.dedupe.search_metres([], []).shape == (0, 2)


def test_pair_search_of_fewer_than_two_points_is_empty() -> None:
    for size in (0, 1):
        i, j, d = geo.dedupe.pairs_within_radius([105.6] * size, [10.4] * size, [5.0] * size)
        assert len(i) == len(j) == len(d) == 0
