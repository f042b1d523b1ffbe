"""Duplicate households: the search radius, pair scoring with reasons, and grouping.

A candidate pair (two households within the search radius of each other, or sharing a phone in
one commune) is scored from independent pieces of evidence. Each piece is a ``Reason`` whose
``value`` is its contribution to the log-odds that the two records are one household; the score
is ``sigmoid(prior + sum of values)``, so a reviewer can read why a pair scored as it did and a
threshold change needs no re-scoring logic.

The evidence, one reason per aspect:

- distance, relative to both GPS accuracies (``distance_*``);
- head-of-household name, folded (no diacritics, ``đ`` → ``d``, case and spacing ignored) and
  compared token by token, family name first and given name last (``name_*``,
  ``family_name_only``);
- phone, house number, household kind, claimed hamlet and commune.

Everything here is pure: the service finds the candidates (PostGIS) and stores the results.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
from rapidfuzz.distance import OSA, Indel
from rapidfuzz.process import cpdist
from scipy.spatial import cKDTree

from geo.text import fold_name

#: Common family names, folded. A match on one of these alone says little: about 40 % of the
#: delta's households are Nguyễn. Hoàng/Huỳnh and Vũ/Võ are regional spellings of one name.
COMMON_FAMILY_NAMES = frozenset(
    {
        *("nguyen", "tran", "le", "pham", "hoang", "huynh", "phan", "vu", "vo", "dang"),
        *("bui", "do", "ho", "ngo", "duong", "ly"),
    }
)
#: Other family names met in the delta, folded: two different known names are not a typo.
KNOWN_FAMILY_NAMES = COMMON_FAMILY_NAMES | {
    *("truong", "doan", "lam", "chau", "thai", "cao", "luu", "mai", "ta", "trinh", "dinh"),
    *("tang", "la", "quach", "lu", "to", "ha", "kieu", "luong", "thach", "danh", "son"),
}
_FAMILY_VARIANTS = {"huynh": "hoang", "vo": "vu"}
#: The name reason's value when one of the two names is missing: no evidence either way.
NAME_MISSING_VALUE = 0.0
# "Tổ 5" names a neighbourhood group, shared by dozens of houses, not one door.
_GROUP_PREFIXES = ("to ", "khom ", "ap ")
_HOUSE_NUMBER_PREFIXES = ("so nha ", "so ")
_WORD = re.compile(r"[^\W_]+")
# A Vietnamese syllable, folded: optional onset, a vowel nucleus (with its glides), optional
# final consonant. "cuuong" or "lnh" is no syllable, so it can only be a typo.
_SYLLABLE = re.compile(
    r"(?:ngh|ng|nh|ch|gh|gi|kh|ph|qu|th|tr|[bcdghklmnprstvx])?"
    r"(?:oai|oay|oeo|uay|uoi|uou|uya|uye|uyu|ieu|yeu"
    r"|ai|ao|au|ay|eo|eu|ia|ie|iu|oa|oe|oi|oo|ua|ue|ui|uo|uu|uy|ye|[aeiouy])"
    r"(?:ch|nh|ng|[cmnpt])?"
)


@dataclass(frozen=True, slots=True)
class DedupeWeights:
    """Log-odds contributions of each piece of evidence (positive: same household).

    Tuned on ``geo.dedupe_eval`` sets; see ``tests/geo/test_dedupe_eval.py``.
    """

    prior: float = -2.0
    # Distance, as x = distance / accuracy radius: near_max at x = 0, near_min at x = 1, then
    # falling by far_per_doubling for each doubling of x, never below far_min.
    near_max: float = 1.5
    near_min: float = 1.0
    far_per_doubling: float = 1.0
    far_min: float = -3.0
    name_same: float = 4.5
    name_diacritics_differ: float = 1.0
    name_tokens_reordered: float = 4.0
    name_similar_given_same: float = 3.5
    name_similar_given_typo: float = 3.0
    name_similar_given_close: float = 1.0
    middle_name_differs: float = 0.5
    name_given_only: float = 2.5
    family_name_only_common: float = -3.5
    family_name_only_rare: float = -3.0
    name_differs: float = -4.5
    phone_same: float = 4.0
    phone_differs: float = -5.0
    house_number_same: float = 1.0
    house_group_same: float = 0.2
    house_number_differs: float = -1.2
    kind_differs: float = -1.0
    different_hamlet: float = -0.5
    different_commune: float = -1.0


@dataclass(frozen=True, slots=True)
class DedupeParams:
    """Search radius, thresholds and evidence weights of duplicate detection.

    The search radius of a pair is ``min(cap_m, max(floor_m, k × (accuracy_a + accuracy_b)))``;
    a missing accuracy counts as ``default_accuracy_m``. Pairs scoring at least
    ``review_threshold`` go to review; ``auto_link`` (off by default) lets exact pairs that also
    score at least ``auto_link_threshold`` be merged without review.
    """

    floor_m: float = 10.0
    k: float = 1.5
    cap_m: float = 60.0
    default_accuracy_m: float = 20.0
    review_threshold: float = 0.6
    auto_link: bool = False
    auto_link_threshold: float = 0.95
    #: An exact pair lies within max(exact_distance_m, the better of the two accuracies).
    exact_distance_m: float = 5.0
    #: The accuracy radius never shrinks below this: two fixes of one gate differ by metres.
    min_accuracy_radius_m: float = 5.0
    weights: DedupeWeights = field(default_factory=DedupeWeights)

    def __post_init__(self) -> None:
        metres = (self.floor_m, self.cap_m, self.default_accuracy_m, self.min_accuracy_radius_m)
        if min(metres) <= 0 or self.k < 0 or self.exact_distance_m < 0:
            raise ValueError("distances must be positive and k must not be negative")
        for threshold in (self.review_threshold, self.auto_link_threshold):
            if not 0.0 < threshold <= 1.0:
                raise ValueError("thresholds must lie in (0, 1]")


DEFAULT_PARAMS = DedupeParams()


@dataclass(slots=True)
class HouseholdFacts:
    """What scoring needs of one household; ``phone`` is normalised (``geo.text``) or None."""

    id: int
    hamlet_code: str | None
    commune_code: str | None
    head_name: str | None
    house_number: str | None
    phone: str | None
    kind: str | None
    accuracy_m: float | None


@dataclass(frozen=True, slots=True)
class Reason:
    """One piece of evidence: stable English ``code``, log-odds ``value``, Vietnamese message."""

    code: str
    value: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"code", "value", "message"}``."""
        return {"code": self.code, "value": round(self.value, 3), "message": self.message}


@dataclass(frozen=True, slots=True)
class PairScore:
    """Score in [0, 1], the reasons behind it, and whether the pair is an exact re-capture."""

    score: float
    reasons: tuple[Reason, ...]
    exact: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"score", "exact", "reasons": [...]}``."""
        return {
            "score": round(self.score, 4),
            "exact": self.exact,
            "reasons": [reason.as_dict() for reason in self.reasons],
        }

    def codes(self) -> tuple[str, ...]:
        """The reason codes, in order."""
        return tuple(reason.code for reason in self.reasons)


# --- search radius ---------------------------------------------------------------------------


def search_radius_m(
    acc_a: float | None, acc_b: float | None, params: DedupeParams = DEFAULT_PARAMS
) -> float:
    """How far apart two households may be and still be compared, in metres.

    Examples
    --------
    >>> search_radius_m(3, 3), search_radius_m(6.5, 6.5), search_radius_m(40, 35)
    (10.0, 19.5, 60.0)
    >>> search_radius_m(None, 4)  # a missing accuracy counts as 20 m
    36.0
    """
    a = params.default_accuracy_m if acc_a is None else acc_a
    b = params.default_accuracy_m if acc_b is None else acc_b
    return float(min(params.cap_m, max(params.floor_m, params.k * (a + b))))


def max_search_radius_m(params: DedupeParams = DEFAULT_PARAMS) -> float:
    """The largest ``search_radius_m`` of any pair: the SQL pre-filter distance, in metres.

    Examples
    --------
    >>> max_search_radius_m()
    60.0
    """
    if params.k == 0:
        return float(min(params.cap_m, params.floor_m))
    return float(params.cap_m)


#: Metres per degree of latitude, and of longitude at the equator (local equirectangular
#: metres: within the tens of metres compared here, far more exact than GPS).
M_PER_DEG_LAT = 110_540.0
M_PER_DEG_LON = 111_320.0
#: Accuracy bands of the pair search: a pair's radius grows with both accuracies, so pairs of
#: good fixes are searched with a far smaller radius than the cap.
_BAND_EDGES_M = (8.0, 15.0)


def local_metres(
    lon_a: npt.ArrayLike, lat_a: npt.ArrayLike, lon_b: npt.ArrayLike, lat_b: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Distance in metres between points, equirectangular at their mean latitude.

    Examples
    --------
    >>> round(float(local_metres(105.6, 10.4, 105.6, 10.4001)), 2)
    11.05
    """
    lon_a, lat_a, lon_b, lat_b = (np.asarray(v, dtype=float) for v in (lon_a, lat_a, lon_b, lat_b))
    dx = (lon_a - lon_b) * M_PER_DEG_LON * np.cos(np.radians((lat_a + lat_b) / 2))
    dy = (lat_a - lat_b) * M_PER_DEG_LAT
    result: npt.NDArray[np.float64] = np.hypot(dx, dy)
    return result


def search_metres(lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Planar metres (east, north) for a k-d tree pair search over these points, shape (n, 2).

    East-west is measured at the latitude farthest from the equator among the points, where a
    degree of longitude is shortest: distances in these metres never exceed ``local_metres``,
    so no pair within a radius escapes a query with that radius, however wide the latitude
    range (8° N to 23° N across Vietnam). At the mean latitude the points north of it would
    look farther apart than they are, and pairs near the radius would be lost.

    Examples
    --------
    >>> xy = search_metres([105.0, 105.001], [8.6, 23.3])
    >>> round(float(xy[1, 0] - xy[0, 0]), 1)  # 0.001° of longitude at 23.3° N
    102.2
    """
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    if not len(lat):
        return np.empty((0, 2))
    scale = M_PER_DEG_LON * math.cos(math.radians(float(np.max(np.abs(lat)))))
    xy: npt.NDArray[np.float64] = np.column_stack([lon * scale, lat * M_PER_DEG_LAT])
    return xy


def pairs_within_radius(
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    accuracy_m: npt.ArrayLike,
    params: DedupeParams = DEFAULT_PARAMS,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Every pair of points closer than its ``search_radius_m``: indices ``i < j`` and metres.

    A k-d tree over local metres, queried once per pair of accuracy bands with the largest
    radius that band pair can have; the exact distance and radius then decide. ``accuracy_m``
    may hold NaN for a missing accuracy (counted as ``default_accuracy_m``). The tree works in
    ``search_metres``, so no pair within radius escapes it.

    Examples
    --------
    >>> i, j, d = pairs_within_radius([105.6, 105.6, 105.6], [10.4, 10.40005, 10.4003], [5, 5, 5])
    >>> i.tolist(), j.tolist(), d.round(1).tolist()
    ([0], [1], [5.5])
    """
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    acc = np.asarray(accuracy_m, dtype=float)
    acc = np.where(np.isnan(acc), params.default_accuracy_m, acc)
    empty = np.empty(0, dtype=np.int64)
    if len(lon) < 2:
        return empty, empty, np.empty(0)
    xy = search_metres(lon, lat)
    edges = (*_BAND_EDGES_M, math.inf)
    band = np.searchsorted(np.array(edges[:-1]), acc, side="left")
    members = [np.flatnonzero(band == k) for k in range(len(edges))]
    trees = [cKDTree(xy[m]) if len(m) else None for m in members]
    found_i, found_j = [], []
    for p, q in itertools.combinations_with_replacement(range(len(edges)), 2):
        tree_p, tree_q = trees[p], trees[q]
        if tree_p is None or tree_q is None:
            continue
        # A millimetre more than the radius: floating-point slack, the tree never overstates.
        radius = search_radius_m(edges[p], edges[q], params) + 0.001
        if p == q:
            local = tree_p.query_pairs(radius, output_type="ndarray")
            left, right = members[p][local[:, 0]], members[p][local[:, 1]]
        else:
            near = tree_p.sparse_distance_matrix(tree_q, radius, output_type="ndarray")
            left, right = members[p][near["i"]], members[q][near["j"]]
        found_i.append(left)
        found_j.append(right)
    i = np.concatenate(found_i) if found_i else empty
    j = np.concatenate(found_j) if found_j else empty
    i, j = np.minimum(i, j), np.maximum(i, j)
    distance = local_metres(lon[i], lat[i], lon[j], lat[j])
    radius = np.minimum(params.cap_m, np.maximum(params.floor_m, params.k * (acc[i] + acc[j])))
    keep = distance <= radius
    return i[keep].astype(np.int64), j[keep].astype(np.int64), distance[keep]


def accuracy_radius_m(
    acc_a: float | None, acc_b: float | None, params: DedupeParams = DEFAULT_PARAMS
) -> float:
    """How far apart two fixes of one spot typically fall: the two accuracies combined.

    GPS errors of two fixes are independent, so their radii add in quadrature.

    Examples
    --------
    >>> accuracy_radius_m(6, 8), accuracy_radius_m(2, 2)
    (10.0, 5.0)
    """
    a = params.default_accuracy_m if acc_a is None else acc_a
    b = params.default_accuracy_m if acc_b is None else acc_b
    return max(params.min_accuracy_radius_m, math.hypot(a, b))


# --- scoring ---------------------------------------------------------------------------------


def score_pair(
    a: HouseholdFacts,
    b: HouseholdFacts,
    distance_m: float,
    params: DedupeParams = DEFAULT_PARAMS,
) -> PairScore:
    """Score a candidate pair: how likely the two records are one household, and why.

    Parameters
    ----------
    a, b : HouseholdFacts
        The two households (order does not matter).
    distance_m : float
        Distance between their points in metres (may exceed the search radius for pairs found
        by a shared phone).
    params : DedupeParams

    Returns
    -------
    PairScore
        ``score`` = sigmoid(prior + sum of the reasons' values); ``exact`` when the folded
        names and the phones are equal, nothing contradicts, the points are within
        max(5 m, the better accuracy) and the score reaches ``auto_link_threshold``.

    Examples
    --------
    >>> one = HouseholdFacts(1, "99001-01", "99001", "Nguyễn Văn An", "12/3", "0912345678",
    ...                      "residence", 6.0)
    >>> two = HouseholdFacts(2, "99001-01", "99001", "nguyen van an", "12/3", "0912345678",
    ...                      "residence", 8.0)
    >>> result = score_pair(one, two, 3.0)
    >>> round(result.score, 3), result.exact
    (1.0, True)
    >>> result.codes()
    ('distance_within_accuracy', 'name_same', 'phone_same', 'house_number_same')
    """
    w = params.weights
    reasons = [
        _distance_reason(a, b, distance_m, params),
        _name_reason(a.head_name, b.head_name, w),
    ]
    phone = _phone_reason(a.phone, b.phone, w)
    if phone is not None:
        reasons.append(phone)
    house = _house_reason(a.house_number, b.house_number, w)
    if house is not None:
        reasons.append(house)
    reasons.extend(_context_reasons(a, b, w))
    logit = w.prior
    for reason in reasons:
        logit += reason.value
    score = _sigmoid(logit)
    exact = score >= params.auto_link_threshold and _exact(a, b, distance_m, reasons, params)
    return PairScore(score=score, reasons=tuple(reasons), exact=exact)


def may_reach(a: HouseholdFacts, b: HouseholdFacts, params: DedupeParams = DEFAULT_PARAMS) -> bool:
    """False only when the pair cannot reach the review threshold, whatever its distance.

    The pre-filter of the candidate searches, one pair at a time: the score is bounded by the
    best value every reason could add given what is cheap to know, the phones and whether the
    two names could agree at all (same given name, one typo apart, or the same words
    reordered). Computed from the weights, so it stays exact when they are tuned. The searches
    run ``reachable``, the same test on arrays (a province holds millions of close pairs); this
    scalar form is the reference the tests hold it to.

    Examples
    --------
    >>> one = HouseholdFacts(1, "h", "c", "Nguyễn Văn An", "12", "0912345678", "residence", 5.0)
    >>> two = HouseholdFacts(2, "h", "c", "Trần Thị Bình", "12", "0987654321", "residence", 5.0)
    >>> may_reach(one, two), may_reach(one, one)
    (False, True)
    >>> may_reach(one, HouseholdFacts(3, "h", "c", "Trần Thị Bình", "12", None, "residence", 5.0))
    False
    """
    bounds = _bounds(params)
    name_a, name_b = _parse_name(a.head_name or ""), _parse_name(b.head_name or "")
    if not name_a.tokens or not name_b.tokens:
        name = NAME_MISSING_VALUE
    elif _names_may_agree(name_a.tokens, name_b.tokens):
        name = bounds.name_agree
    else:
        name = bounds.name_disagree
    if a.phone and b.phone:
        phone = bounds.phone_same if a.phone == b.phone else bounds.phone_differs
    else:
        phone = 0.0
    return bounds.rest + name + phone >= bounds.logit_threshold


def _names_may_agree(tokens_a: tuple[str, ...], tokens_b: tuple[str, ...]) -> bool:
    """Whether two (non-empty) folded names could earn more than a "differs" reason."""
    given_a, given_b = tokens_a[-1], tokens_b[-1]
    return (
        given_a == given_b or _typo_apart(given_a, given_b) or sorted(tokens_a) == sorted(tokens_b)
    )


@dataclass(frozen=True, slots=True)
class _Bounds:
    """Best contributions of the reasons, for the pre-filters (``may_reach``, ``reachable``)."""

    rest: float  # prior + the best distance, house number, kind and place reasons
    name_agree: float  # the best name reason of names that may agree
    name_disagree: float  # the best of "differs" and "family name only"
    phone_same: float
    phone_differs: float
    logit_threshold: float


_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


def _per_object(build: Callable[[_Key], _Value]) -> Callable[[_Key], _Value]:
    """``build`` computed once per argument object, found again by identity.

    For values derived from the parameter and weight objects, asked for on every pair: hashing
    a frozen dataclass of twenty-odd fields on each call would cost more than the rest of the
    scoring. Each object is kept with its value, so its id cannot pass to another object while
    cached; at most 64 are kept.
    """
    cache: dict[int, tuple[_Key, _Value]] = {}

    @functools.wraps(build)
    def get(key: _Key) -> _Value:
        cached = cache.get(id(key))
        if cached is not None and cached[0] is key:
            return cached[1]
        if len(cache) >= 64:
            cache.clear()
        value = build(key)
        cache[id(key)] = (key, value)
        return value

    return get


@_per_object
def _bounds(params: DedupeParams) -> _Bounds:
    """The bounds of these parameters."""
    w = params.weights
    name_agree = max(
        w.name_same,
        w.name_diacritics_differ,
        w.name_tokens_reordered,
        w.name_given_only,
        w.name_similar_given_same,
        w.name_similar_given_typo,
        w.name_similar_given_close,
        w.middle_name_differs,
        NAME_MISSING_VALUE,
    )
    rest = (
        w.prior
        + max(w.near_max, w.near_min)
        + max(w.house_number_same, w.house_group_same, w.house_number_differs, 0.0)
        + max(w.kind_differs, 0.0)
        + max(w.different_hamlet, w.different_commune, 0.0)
    )
    threshold = params.review_threshold
    logit = math.inf if threshold >= 1.0 else math.log(threshold / (1.0 - threshold))
    return _Bounds(
        rest=rest,
        name_agree=name_agree,
        name_disagree=max(w.name_differs, w.family_name_only_common, w.family_name_only_rare),
        phone_same=w.phone_same,
        phone_differs=w.phone_differs,
        # A hair below: the filter must never drop a pair that sits exactly on the threshold.
        logit_threshold=logit - 1e-9,
    )


@dataclass(frozen=True, slots=True)
class NameKeys:
    """Integer keys of many households' names, for ``reachable``: the given name (last word)
    and the multiset of words of each, -1 where no name is known."""

    given: npt.NDArray[np.int64]
    words: npt.NDArray[np.int64]
    vocabulary: tuple[str, ...]  # given-name key → the folded word
    #: Households whose name is not known for certain here: they may agree with any name.
    uncertain: npt.NDArray[np.bool_] | None = None


def name_keys(names: Sequence[str | None]) -> NameKeys:
    """The ``NameKeys`` of household names (raw or stored form; folded here).

    Examples
    --------
    >>> keys = name_keys(["Nguyễn Văn An", "nguyen van an", "An Nguyễn Văn", None])
    >>> keys.given.tolist(), keys.words.tolist(), keys.vocabulary
    ([0, 0, 1, -1], [0, 0, 0, -1], ('an', 'van'))
    """
    given_ids: dict[str, int] = {}
    word_ids: dict[tuple[str, ...], int] = {}
    distinct: dict[str | None, int] = {name: k for k, name in enumerate(dict.fromkeys(names))}
    table = np.full((len(distinct), 2), -1, dtype=np.int64)
    for name, k in distinct.items():
        tokens = _parse_name(name or "").tokens
        if tokens:
            table[k, 0] = given_ids.setdefault(tokens[-1], len(given_ids))
            table[k, 1] = word_ids.setdefault(tuple(sorted(tokens)), len(word_ids))
    index = np.fromiter(map(distinct.__getitem__, names), dtype=np.int64, count=len(names))
    given, words = table[index, 0], table[index, 1]
    return NameKeys(given, words, tuple(given_ids))


def reachable(
    a: npt.NDArray[np.int64],
    b: npt.NDArray[np.int64],
    *,
    names: NameKeys,
    phones: npt.NDArray[np.int64],
    params: DedupeParams = DEFAULT_PARAMS,
) -> npt.NDArray[np.bool_]:
    """``may_reach`` for many pairs at once: ``a[i]``, ``b[i]`` index the households of
    ``names`` and ``phones`` (an integer key per normalised phone, -1 where none)."""
    bounds = _bounds(params)
    ga, gb = names.given[a], names.given[b]
    named = (ga >= 0) & (gb >= 0)
    agree = named & ((ga == gb) | (names.words[a] == names.words[b]))
    agree |= _typo_given(ga, gb, named & ~agree, names.vocabulary)
    name = np.where(
        named, np.where(agree, bounds.name_agree, bounds.name_disagree), NAME_MISSING_VALUE
    )
    if names.uncertain is not None:
        name = np.where(names.uncertain[a] | names.uncertain[b], bounds.name_agree, name)
    pa, pb = phones[a], phones[b]
    both = (pa >= 0) & (pb >= 0)
    phone = np.where(both, np.where(pa == pb, bounds.phone_same, bounds.phone_differs), 0.0)
    result: npt.NDArray[np.bool_] = bounds.rest + name + phone >= bounds.logit_threshold
    return result


def _typo_given(
    ga: npt.NDArray[np.int64],
    gb: npt.NDArray[np.int64],
    check: npt.NDArray[np.bool_],
    vocabulary: tuple[str, ...],
) -> npt.NDArray[np.bool_]:
    """Pairs (among ``check``) whose given names are one slip apart; each distinct pair of
    words is compared once, in C (rapidfuzz)."""
    found = np.zeros(len(ga), dtype=bool)
    if not check.any():
        return found
    size = len(vocabulary)
    keys = np.minimum(ga, gb) * size + np.maximum(ga, gb)
    distinct = np.unique(keys[check])
    words = np.array(vocabulary, dtype=object)
    distance = cpdist(
        words[distinct // size].tolist(),
        words[distinct % size].tolist(),
        scorer=OSA.distance,
        score_cutoff=1,
        workers=1,
    )
    found[check] = np.isin(keys[check], distinct[np.asarray(distance) <= 1])
    return found


def _sigmoid(logit: float) -> float:
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    odds = math.exp(logit)
    return odds / (1.0 + odds)


_EXACT_BLOCKERS = frozenset({"house_number_differs", "kind_differs", "different_commune"})


def _exact(
    a: HouseholdFacts,
    b: HouseholdFacts,
    distance_m: float,
    reasons: list[Reason],
    params: DedupeParams,
) -> bool:
    """Same folded name, same phone, about the same spot, and nothing that contradicts."""
    codes = {reason.code for reason in reasons}
    if not {"name_same", "phone_same"} <= codes or codes & _EXACT_BLOCKERS:
        return False
    accuracies = [acc for acc in (a.accuracy_m, b.accuracy_m) if acc is not None]
    best = min(accuracies, default=params.default_accuracy_m)
    return distance_m <= max(params.exact_distance_m, best)


# --- distance --------------------------------------------------------------------------------


def _distance_reason(
    a: HouseholdFacts, b: HouseholdFacts, distance_m: float, params: DedupeParams
) -> Reason:
    """Close relative to both accuracies is strong; beyond it, weaker with each doubling."""
    w = params.weights
    radius = accuracy_radius_m(a.accuracy_m, b.accuracy_m, params)
    ratio = max(distance_m, 0.0) / radius
    if ratio <= 1.0:
        value = w.near_max - (w.near_max - w.near_min) * ratio
        message = f"Cách nhau {distance_m:.0f} m, trong sai số GPS của hai lần đo ({radius:.0f} m)"
        return Reason("distance_within_accuracy", value, message)
    value = max(w.far_min, w.near_min - w.far_per_doubling * math.log2(ratio))
    if distance_m <= search_radius_m(a.accuracy_m, b.accuracy_m, params):
        message = f"Cách nhau {distance_m:.0f} m, xa hơn sai số GPS ({radius:.0f} m)"
        return Reason("distance_beyond_accuracy", value, message)
    return Reason("distance_far", value, f"Ở xa nhau ({distance_m:.0f} m)")


# --- names -----------------------------------------------------------------------------------


class _Name(NamedTuple):
    """A name prepared for matching: folded text and words, and the words with diacritics."""

    folded: str
    tokens: tuple[str, ...]
    marked: tuple[str, ...] | None  # NFC lower-case words, when they align with ``tokens``


@functools.lru_cache(maxsize=1 << 16)
def _parse_name(raw: str) -> _Name:
    folded = fold_name(raw)
    tokens = tuple(folded.split())
    marked = tuple(_WORD.findall(unicodedata.normalize("NFC", raw.lower())))
    return _Name(folded, tokens, marked if len(marked) == len(tokens) else None)


def _name_reason(raw_a: str | None, raw_b: str | None, w: DedupeWeights) -> Reason:
    """The one name reason of a pair (see the module docstring)."""
    a, b = _parse_name(raw_a or ""), _parse_name(raw_b or "")
    if not a.tokens or not b.tokens:
        return Reason("name_missing", NAME_MISSING_VALUE, "Thiếu tên chủ hộ ở một lần thu thập")
    if a.tokens == b.tokens:
        return _same_folded(a, b, w)
    if sorted(a.tokens) == sorted(b.tokens):
        return _fixed(w)["name_tokens_reordered"]
    short, long = (a, b) if len(a.tokens) <= len(b.tokens) else (b, a)
    if len(short.tokens) < len(long.tokens) and long.tokens[-len(short.tokens) :] == short.tokens:
        message = "Một lần chỉ ghi tên, không ghi họ: trùng tên của lần kia"
        return Reason("name_given_only", w.name_given_only, message)
    return _compare_parts(a, b, w)


def _same_folded(a: _Name, b: _Name, w: DedupeWeights) -> Reason:
    """Equal once folded; unless both spell a word with different diacritics (Hùng / Hưng)."""
    if a.marked is not None and b.marked is not None:
        for word_a, word_b in zip(a.marked, b.marked, strict=True):
            if word_a != word_b and not word_a.isascii() and not word_b.isascii():
                return Reason(
                    "name_diacritics_differ",
                    w.name_diacritics_differ,
                    f"Họ tên chỉ khác dấu ({word_a} / {word_b}): có thể là hai người",
                )
    return _fixed(w)["name_same"]


def _compare_parts(a: _Name, b: _Name, w: DedupeWeights) -> Reason:
    """Family name (first word), middle names and given name (last word) compared apart."""
    if not _families_agree(a.tokens[0], b.tokens[0]):
        return Reason("name_differs", w.name_differs, "Họ tên khác nhau")
    given_a, given_b = a.tokens[-1], b.tokens[-1]
    if given_a != given_b and not _typo_apart(given_a, given_b):
        return _family_only(a.tokens[0], w)
    if not _middles_agree(a.tokens[1:-1], b.tokens[1:-1]):
        if given_a != given_b:
            return _family_only(a.tokens[0], w)
        message = "Trùng họ và tên, khác tên đệm: có thể là hai người"
        return Reason("middle_name_differs", w.middle_name_differs, message)
    similarity = Indel.normalized_similarity(a.folded, b.folded)
    if given_a != given_b:
        return _given_slip(given_a, given_b, similarity, w)
    value = w.name_similar_given_same * min(1.0, similarity / 0.9)
    return Reason("name_similar", value, f"Họ tên gần giống ({similarity:.0%}), trùng tên")


def _given_slip(given_a: str, given_b: str, similarity: float, w: DedupeWeights) -> Reason:
    """Given names one letter apart: a typo when one is no Vietnamese syllable ("Đt" for
    "Đạt"); when both are real names (An / Anh, Lan / Loan) it may be two people."""
    if _is_syllable(given_a) and _is_syllable(given_b):
        message = f"Họ tên gần giống ({similarity:.0%}), tên khác một chữ cái: có thể hai người"
        return Reason("name_similar", w.name_similar_given_close, message)
    message = f"Họ tên gần giống ({similarity:.0%}), tên có lẽ gõ sai một chữ cái"
    return Reason("name_similar", w.name_similar_given_typo, message)


@functools.lru_cache(maxsize=1 << 12)
def _is_syllable(word: str) -> bool:
    """Whether a folded word has the shape of a Vietnamese syllable: onset, vowels, coda."""
    return _SYLLABLE.fullmatch(word) is not None


def _typo_apart(word_a: str, word_b: str) -> bool:
    """One slip apart: a letter replaced, dropped, added, or two neighbours swapped."""
    return OSA.distance(word_a, word_b, score_cutoff=2) <= 1


def _families_agree(family_a: str, family_b: str) -> bool:
    """Same family name, a regional spelling of it, or a slip on a name that is no family's."""
    if _FAMILY_VARIANTS.get(family_a, family_a) == _FAMILY_VARIANTS.get(family_b, family_b):
        return True
    # Phan / Phạm are one letter apart and both real: a slip only if one is no family name.
    both_known = family_a in KNOWN_FAMILY_NAMES and family_b in KNOWN_FAMILY_NAMES
    return not both_known and _typo_apart(family_a, family_b)


def _middles_agree(middle_a: tuple[str, ...], middle_b: tuple[str, ...]) -> bool:
    """Middle names that do not contradict: equal, one left out, abbreviated ("V."), a slip."""
    if not middle_a or not middle_b or middle_a == middle_b:
        return True
    short, long = sorted((middle_a, middle_b), key=len)
    if len(short) < len(long):
        return all(word in long for word in short)  # "Kim" for "Thị Kim"
    return all(_words_agree(one, other) for one, other in zip(short, long, strict=True))


def _words_agree(one: str, other: str) -> bool:
    """The same word, its initial ("v" for "van"), or one slip away."""
    if one == other:
        return True
    if len(one) == 1 or len(other) == 1:
        return one[0] == other[0]
    return _typo_apart(one, other)


def _family_only(family: str, w: DedupeWeights) -> Reason:
    if family in COMMON_FAMILY_NAMES:
        message = "Chỉ trùng họ (một họ phổ biến), tên khác"
        return Reason("family_name_only", w.family_name_only_common, message)
    return Reason("family_name_only", w.family_name_only_rare, "Chỉ trùng họ, tên khác")


# Reasons whose value is one weight and whose message is fixed: built once per weights object.
_FIXED = {
    "name_same": "Trùng họ tên (không kể dấu, hoa thường)",
    "name_tokens_reordered": "Cùng các chữ trong họ tên, khác thứ tự",
    "phone_same": "Trùng số điện thoại",
    "phone_differs": "Hai số điện thoại khác nhau",
    "kind_differs": "Loại hộ khác nhau",
    "different_hamlet": "Khai báo ở hai ấp/khóm khác nhau",
    "different_commune": "Ở hai xã khác nhau",
}


@_per_object
def _fixed(w: DedupeWeights) -> dict[str, Reason]:
    """The fixed reasons of these weights, by code."""
    return {code: Reason(code, float(getattr(w, code)), text) for code, text in _FIXED.items()}


# --- phone, house number, kind, place --------------------------------------------------------


def _phone_reason(phone_a: str | None, phone_b: str | None, w: DedupeWeights) -> Reason | None:
    """Same phone is strong; two different phones strongly against; a missing one neutral."""
    if not phone_a or not phone_b:
        return None
    return _fixed(w)["phone_same" if phone_a == phone_b else "phone_differs"]


@functools.lru_cache(maxsize=1 << 14)
def _house_key(raw: str) -> str:
    """House number for comparison: folded, "số"/"số nhà" dropped, no spaces; the slash stays,
    so "Số 12 / 3A" → "12/3a" and "12/3" is not "123"."""
    parts = [fold_name(part) for part in raw.split("/")]
    for prefix in _HOUSE_NUMBER_PREFIXES:
        if parts[0].startswith(prefix):
            parts[0] = parts[0][len(prefix) :]
            break
    if len(parts) == 1 and parts[0].startswith(_GROUP_PREFIXES):
        return parts[0]
    key = "/".join(part.replace(" ", "") for part in parts)
    return key if key.strip("/") else ""


def _house_reason(raw_a: str | None, raw_b: str | None, w: DedupeWeights) -> Reason | None:
    """Same house number is evidence for, a different one against; a shared "Tổ 5" is weak."""
    key_a, key_b = _house_key(raw_a or ""), _house_key(raw_b or "")
    if not key_a or not key_b:
        return None
    if key_a != key_b:
        return Reason(
            "house_number_differs", w.house_number_differs, f"Số nhà khác nhau ({raw_a} / {raw_b})"
        )
    if key_a.startswith(_GROUP_PREFIXES):
        return Reason(
            "house_number_same", w.house_group_same, f"Cùng tổ/ấp ({raw_a}), không số nhà"
        )
    return Reason("house_number_same", w.house_number_same, f"Trùng số nhà ({raw_a})")


def _context_reasons(a: HouseholdFacts, b: HouseholdFacts, w: DedupeWeights) -> list[Reason]:
    """Household kind and claimed units: differences weigh a little against."""
    found = []
    if a.kind and b.kind and a.kind != b.kind:
        found.append(_fixed(w)["kind_differs"])
    if a.commune_code and b.commune_code and a.commune_code != b.commune_code:
        found.append(_fixed(w)["different_commune"])
    elif a.hamlet_code and b.hamlet_code and a.hamlet_code != b.hamlet_code:
        found.append(_fixed(w)["different_hamlet"])
    return found


# --- groups ----------------------------------------------------------------------------------


def group_pairs(pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Each household of the pairs → its group: the smallest id among those linked to it.

    Pairs chain: A~B and B~C put A, B and C in one group, as the review queue shows them.

    Examples
    --------
    >>> group_pairs([(5, 3), (3, 9), (7, 8)])
    {5: 3, 3: 3, 9: 3, 7: 7, 8: 7}
    >>> group_pairs([])
    {}
    """
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        top = node
        while parent[top] != top:
            top = parent[top]
        while parent[node] != top:  # path compression keeps long chains cheap
            parent[node], node = top, parent[node]
        return top

    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = root(a), root(b)
        if ra != rb:
            # The smaller id becomes the root, so the root is the group id.
            parent[max(ra, rb)] = min(ra, rb)
    return {node: root(node) for node in parent}
