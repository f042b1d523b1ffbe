"""A labelled evaluation set for duplicate detection, and a pure detection run to measure on it.

The set starts from the demo province's households (``geo.demo``) and adds, deterministically by
seed, two kinds of items:

- **true re-surveys** of a base household (labelled duplicates): captured again 2–25 m away
  (a different standing spot plus both GPS errors), accuracy 3–40 m, with the variation field
  teams produce: lost diacritics, NFD text, a typo, the given name only, upper case, a dropped
  middle name, the phone typed another way or left out, the house number written differently
  or left out, sometimes another household kind or the neighbouring hamlet claimed (another
  team member); a few households are captured three times;
- **true distinct households** that look alike (labelled distinct): a same-family neighbour
  next door (5–20 m), several households of one family in a compound (``12/1``, ``12/2``, …
  within 10 m), the same full name in another hamlet, the same full name next door with another
  phone.

Pairs among the base households are distinct as well: the demo's names are common enough that
neighbours often share a family name.
"""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

import numpy as np
import shapely
from numpy.typing import NDArray

from geo.crs import transformer_from_wgs84, transformer_to_wgs84, utm_crs_for
from geo.dedupe import (
    DEFAULT_PARAMS,
    DedupeParams,
    HouseholdFacts,
    PairScore,
    group_pairs,
    max_search_radius_m,
    score_pair,
    search_radius_m,
)
from geo.demo import (
    CENTRE_LON,
    DEFAULT_NOW,
    DemoProvince,
    DemoUnit,
    generate_households,
    generate_province,
)
from geo.text import fold_name, normalise_phone, normalise_text

Item = dict[str, Any]
Pair = frozenset[str]
FloatArray = NDArray[np.float64]
Fix = tuple[float, float, float]  # lon, lat (WGS84), accuracy in metres

RESURVEY = "resurvey"
SAME_FAMILY_NEIGHBOUR = "same_family_neighbour"
COMPOUND = "compound"
NAMESAKE_FAR = "namesake_far"
NAMESAKE_NEAR = "namesake_near"

_RESURVEY_DISTANCE_M = (2.0, 25.0)
# Where the surveyor stands: mostly the same gate, sometimes the other side of the house.
_STANDING_SD_M = 4.0
_STANDING_FAR_SHARE, _STANDING_FAR_M = 0.15, (5.0, 20.0)
# A reported accuracy is the 68 % radius: sigma per axis = accuracy / 1.515 (Rayleigh).
_ACCURACY_TO_SIGMA = 1.0 / 1.515
_THIRD_CAPTURE_SHARE = 0.08
_NAME_VARIATIONS = {
    "same": 0.22,
    "no_diacritics": 0.2,
    "nfd": 0.14,
    "typo": 0.14,
    "no_diacritics_typo": 0.04,
    "given_only": 0.1,
    "case_spacing": 0.06,
    "no_middle": 0.06,
    "reordered": 0.04,
}
_PHONE_STYLES = ("plain", "grouped", "international", "dotted", "country", "dashed")
_PHONE_KEPT = 0.75  # a re-survey notes the phone again; otherwise leaves it out
_PHONE_ADDED = 0.4  # the base had none; the re-survey got one
_PHONE_MISSING = 0.12  # distinct households with no phone, as in the demo
_HOUSE_REWRITTEN, _HOUSE_DROPPED = 0.1, 0.15
_KIND_CHANGED = 0.06
_OTHER_HAMLET = 0.1
_NEIGHBOUR_M = (5.0, 20.0)
_COMPOUND_SPREAD_M, _COMPOUND_OFFSET_M = 4.0, (3.0, 8.0)
_COMPOUND_SHARED_PHONE = 0.2
_NAMESAKE_NEAR_M = (5.0, 25.0)
_ADJACENT_KEYS = {
    **dict(zip("qwertyuiop", "wqwertyuio", strict=True)),
    **dict(zip("asdfghjkl", "sadfghjkl", strict=True)),
    **dict(zip("zxcvbnm", "xzcvbnm", strict=True)),
}
_LEADING_NUMBER = re.compile(r"\d+")
_MOBILE_PREFIXES = ("090", "091", "093", "097", "098", "086", "070", "079", "083", "035")


@dataclass(frozen=True, slots=True)
class EvalSet:
    """Base items, added variant items, the true duplicate pairs and each variant's case."""

    base: list[Item]
    variants: list[Item]
    labels: frozenset[Pair]
    cases: dict[str, str]  # variant item id → case name (RESURVEY, COMPOUND, …)
    anchors: dict[str, str]  # variant item id → the base item it was made from (or named after)
    commune_of: dict[str, str]  # hamlet code → commune code
    province: DemoProvince  # the units the items were captured in (to load into a service)

    def items(self) -> list[Item]:
        """Base and variant items together."""
        return [*self.base, *self.variants]

    def makeup(self) -> dict[str, int]:
        """How many variant items of each case, and how many labelled pairs."""
        counts = Counter(self.cases.values())
        return {**dict(sorted(counts.items())), "base": len(self.base), "pairs": len(self.labels)}


class Evaluation(NamedTuple):
    """Precision, recall and F1 of predicted pairs, with the counts behind them."""

    precision: float
    recall: float
    f1: float
    counts: dict[str, int]


# --- the set ---------------------------------------------------------------------------------


def generate_eval_set(
    *,
    seed: int = 2026,
    resurveys: int = 200,
    same_family_neighbours: int = 80,
    compounds: int = 30,
    namesakes_far: int = 30,
    namesakes_near: int = 40,
    communes: int = 3,
    hamlets_per_commune: int = 4,
) -> EvalSet:
    """Build a labelled set on a generated one-district province (deterministic by seed).

    The counts are of added households (a compound adds two or three, about one re-survey in
    twelve adds a third capture); the base is the demo's 60 % of each hamlet's target.

    Raises
    ------
    ValueError
        The province has too few households for the cases asked for.
    """
    province = generate_province(
        seed=seed,
        n_districts=1,
        communes_per_district=communes,
        hamlets_per_commune=hamlets_per_commune,
    )
    base = generate_households(province, seed=seed, fraction=0.6)
    builder = _Builder(province, base, np.random.default_rng([seed, 4]))
    anchors = builder.anchors()
    if resurveys + same_family_neighbours + compounds + namesakes_near > len(base):
        raise ValueError(f"{len(base)} base households are too few for the cases asked for")
    plan: list[tuple[int, Callable[[Item], None]]] = [
        (resurveys, builder.resurvey),
        (same_family_neighbours, builder.same_family_neighbour),
        (compounds, builder.compound),
    ]
    for count, make in plan:
        for _ in range(count):
            make(base[anchors.pop()])
    # "Same name, different phones": the anchor needs a phone to differ from.
    with_phone = [i for i in anchors if normalise_phone(base[i]["household"]["phone"])]
    if len(with_phone) < namesakes_near:
        raise ValueError(f"only {len(with_phone)} households with a phone left for namesakes")
    for _ in range(namesakes_near):
        builder.namesake_near(base[with_phone.pop()])
    for _ in range(namesakes_far):
        builder.namesake_far()
    return EvalSet(
        base=base,
        variants=builder.variants,
        labels=frozenset(builder.labels),
        cases=builder.cases,
        anchors=builder.anchors_of,
        commune_of={h.code: h.parent_code or "" for h in province.hamlets},
        province=province,
    )


@dataclass
class _Builder:
    """Adds variant items around base households; one random stream for all of them."""

    province: DemoProvince
    base: list[Item]
    rng: np.random.Generator
    variants: list[Item] = field(default_factory=list)
    labels: set[Pair] = field(default_factory=set)
    cases: dict[str, str] = field(default_factory=dict)
    anchors_of: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        utm = utm_crs_for(CENTRE_LON)
        self._to_metres = transformer_from_wgs84(utm)
        self._to_lonlat = transformer_to_wgs84(utm)
        # Persons (middle + given name) of the base, to name new households plausibly.
        self._persons = sorted({_split(item_name(i))[1:] for i in self.base if item_name(i)})
        self._hamlets = {h.code: h for h in self.province.hamlets}

    def anchors(self) -> list[int]:
        """Every base index once, in random order (popped from the end: no anchor twice)."""
        return [int(i) for i in self.rng.permutation(len(self.base))]

    # -- cases --

    def resurvey(self, anchor: Item) -> None:
        """The same household captured again (sometimes twice more) with field variation."""
        # The household has one phone, even when the first capture left it out.
        phone = normalise_phone(anchor["household"]["phone"])
        unknown = phone is None
        phone = phone or self._fresh_phone()
        first = self._recapture(anchor, phone, unknown=unknown)
        self._add(first, RESURVEY, anchor, duplicates=[anchor])
        if self.rng.random() < _THIRD_CAPTURE_SHARE:
            third = self._recapture(anchor, phone, unknown=unknown)
            self._add(third, RESURVEY, anchor, duplicates=[anchor, first])

    def same_family_neighbour(self, anchor: Item) -> None:
        """Next door (5–20 m), same family name, another person."""
        family, *_ = _split(item_name(anchor))
        name = self._person_name(family, avoid={_given(item_name(anchor))})
        where = self._offset(anchor, float(self.rng.uniform(*_NEIGHBOUR_M)))
        number = _next_door_number(anchor["household"]["house_number"], self.rng)
        self._add(self._new(anchor, where, name, number), SAME_FAMILY_NEIGHBOUR, anchor)

    def compound(self, anchor: Item) -> None:
        """Two or three households of one family in one compound: ``N/1``, ``N/2``, …

        Some give the family's phone (the anchor's) rather than one of their own.
        """
        family, *_ = _split(item_name(anchor))
        family_phone = normalise_phone(anchor["household"]["phone"])
        number, first = _compound_numbering(anchor["household"]["house_number"], self.rng)
        centre = self._offset(anchor, float(self.rng.uniform(*_COMPOUND_OFFSET_M)))
        taken = {_given(item_name(anchor))}
        for sub in range(first, first + int(self.rng.integers(2, 4))):
            name = self._person_name(family, avoid=taken)
            taken.add(_given(name))
            where = self._offset(centre, float(self.rng.uniform(0.0, _COMPOUND_SPREAD_M)))
            member = self._new(anchor, where, name, f"{number}/{sub}")
            if family_phone and self.rng.random() < _COMPOUND_SHARED_PHONE:
                member["household"]["phone"] = self._typed(family_phone)
            self._add(member, COMPOUND, anchor)

    def namesake_near(self, anchor: Item) -> None:
        """The same full name next door, with its own phone."""
        where = self._offset(anchor, float(self.rng.uniform(*_NAMESAKE_NEAR_M)))
        number = _next_door_number(anchor["household"]["house_number"], self.rng)
        item = self._new(anchor, where, item_name(anchor), number, phone_missing=0.0)
        self._add(item, NAMESAKE_NEAR, anchor)

    def namesake_far(self) -> None:
        """The same full name as a base household, living in another hamlet."""
        anchor, host = (self.base[int(i)] for i in self.rng.choice(len(self.base), 2, False))
        while host["hamlet_code"] == anchor["hamlet_code"]:
            host = self.base[int(self.rng.integers(len(self.base)))]
        where = self._offset(host, float(self.rng.uniform(*_NEIGHBOUR_M)))
        number = _next_door_number(host["household"]["house_number"], self.rng)
        self._add(self._new(host, where, item_name(anchor), number), NAMESAKE_FAR, anchor)

    # -- building blocks --

    def _recapture(self, anchor: Item, phone: str, *, unknown: bool) -> Item:
        household = anchor["household"]
        item = self._item(
            self._resurvey_point(anchor),
            self._hamlet_claim(anchor),
            _vary_name(item_name(anchor), self._choice(_NAME_VARIATIONS), self.rng),
        )
        item["household"].update(
            house_number=self._vary_house_number(household["house_number"]),
            street=household["street"],
            phone=self._vary_phone(phone, unknown=unknown),
            kind=self._vary_kind(household["kind"]),
            members=household["members"],
        )
        return item

    def _new(
        self,
        near: Item,
        where: Fix,
        name: str,
        number: str,
        *,
        phone_missing: float = _PHONE_MISSING,
    ) -> Item:
        """A distinct household at ``where`` in ``near``'s hamlet, with a phone of its own."""
        item = self._item(where, near["hamlet_code"], name)
        phone = "" if self.rng.random() < phone_missing else self._typed(self._fresh_phone())
        kind = "business" if self.rng.random() < 0.1 else "residence"
        street = near["household"]["street"]
        members = int(self.rng.integers(1, 8))
        item["household"].update(
            house_number=number, street=street, phone=phone, kind=kind, members=members
        )
        return item

    def _item(self, where: Fix, hamlet: str, name: str) -> Item:
        """A submission item at ``where``, captured in the last four weeks."""
        lon, lat, accuracy = where
        hours = float(self.rng.uniform(1.0, 24.0 * 28))
        captured = DEFAULT_NOW - timedelta(hours=hours)
        return {
            "id": str(uuid.UUID(bytes=self.rng.bytes(16), version=4)),
            "captured_at": captured.isoformat(timespec="seconds"),
            "location": {"lat": lat, "lon": lon, "accuracy_m": accuracy, "mock": False},
            "hamlet_code": hamlet,
            "household": {"head_name": name},
            "note": "",
        }

    def _add(self, item: Item, case: str, anchor: Item, *, duplicates: Sequence[Item] = ()) -> None:
        self.variants.append(item)
        self.cases[item["id"]] = case
        self.anchors_of[item["id"]] = anchor["id"]
        self.labels.update(frozenset((item["id"], other["id"])) for other in duplicates)

    def _choice(self, weights: dict[str, float]) -> str:
        names = list(weights)
        p = np.array([weights[n] for n in names])
        return names[int(self.rng.choice(len(names), p=p / p.sum()))]

    # -- geometry --

    def _metres(self, item: Item) -> tuple[float, float]:
        x, y = self._to_metres.transform(item["location"]["lon"], item["location"]["lat"])
        return float(x), float(y)

    def _point(self, x: float, y: float, accuracy: float) -> Fix:
        lon, lat = self._to_lonlat.transform(x, y)
        return round(float(lon), 6), round(float(lat), 6), accuracy

    def _offset(self, origin: Item | Fix, distance_m: float) -> Fix:
        """A point ``distance_m`` from ``origin`` in a random direction, with a new accuracy."""
        if isinstance(origin, tuple):
            x, y = self._to_metres.transform(origin[0], origin[1])
        else:
            x, y = self._metres(origin)
        angle = float(self.rng.uniform(0.0, 2.0 * math.pi))
        dx, dy = distance_m * math.cos(angle), distance_m * math.sin(angle)
        return self._point(float(x) + dx, float(y) + dy, self._accuracy())

    def _resurvey_point(self, anchor: Item) -> Fix:
        """Another standing spot plus both fixes' GPS errors, 2–25 m from the first fix."""
        x, y = self._metres(anchor)
        accuracy = self._accuracy()
        sigma = math.hypot(anchor["location"]["accuracy_m"], accuracy) * _ACCURACY_TO_SIGMA
        low, high = _RESURVEY_DISTANCE_M
        while True:
            if self.rng.random() < _STANDING_FAR_SHARE:
                standing = float(self.rng.uniform(*_STANDING_FAR_M))
            else:
                standing = abs(float(self.rng.normal(0.0, _STANDING_SD_M)))
            angle = float(self.rng.uniform(0.0, 2.0 * math.pi))
            dx = standing * math.cos(angle) + float(self.rng.normal(0.0, sigma))
            dy = standing * math.sin(angle) + float(self.rng.normal(0.0, sigma))
            if low <= math.hypot(dx, dy) <= high:
                return self._point(x + dx, y + dy, accuracy)

    def _accuracy(self) -> float:
        """Reported accuracy as in the demo: mostly 3–15 m, one in ten 15–40 m."""
        if self.rng.random() < 0.1:
            return round(float(self.rng.uniform(15.0, 40.0)), 1)
        return round(float(np.clip(self.rng.lognormal(math.log(6.5), 0.4), 3.0, 15.0)), 1)

    def _hamlet_claim(self, anchor: Item) -> str:
        """Usually the anchor's hamlet; sometimes the nearest sibling (another team member)."""
        own = self._hamlets[anchor["hamlet_code"]]
        if self.rng.random() >= _OTHER_HAMLET:
            return own.code
        siblings = [
            h for h in self.province.hamlets if h.parent_code == own.parent_code and h != own
        ]
        if not siblings:
            return own.code
        point = shapely.Point(anchor["location"]["lon"], anchor["location"]["lat"])
        return min(siblings, key=lambda h: _distance_deg(h, point)).code

    # -- fields --

    def _person_name(self, family: str, *, avoid: set[str]) -> str:
        """``family`` + a base person's middle and given name, the given name not in ``avoid``."""
        while True:
            middle, given = self._persons[int(self.rng.integers(len(self._persons)))]
            if fold_name(given) not in {fold_name(a) for a in avoid}:
                return " ".join(part for part in (family, middle, given) if part)

    def _vary_house_number(self, number: str) -> str:
        if not number:
            return ""
        draw = self.rng.random()
        if draw < _HOUSE_DROPPED:
            return ""
        if draw < _HOUSE_DROPPED + _HOUSE_REWRITTEN:
            return _rewrite_house_number(number, self.rng)
        return number

    def _vary_phone(self, phone: str, *, unknown: bool) -> str:
        """The household's phone (10 digits) as noted again, in any style, or left out."""
        if self.rng.random() >= (_PHONE_ADDED if unknown else _PHONE_KEPT):
            return ""
        return self._typed(phone)

    def _typed(self, phone: str) -> str:
        return _phone_style(phone, _PHONE_STYLES[int(self.rng.integers(len(_PHONE_STYLES)))])

    def _vary_kind(self, kind: str) -> str:
        if self.rng.random() >= _KIND_CHANGED:
            return kind
        return "business" if kind == "residence" else "residence"

    def _fresh_phone(self) -> str:
        """A new 10-digit mobile number."""
        prefix = _MOBILE_PREFIXES[int(self.rng.integers(len(_MOBILE_PREFIXES)))]
        return f"{prefix}{int(self.rng.integers(10**7)):07d}"


def item_name(item: Item) -> str:
    """The head-of-household name of a submission item ('' when absent)."""
    return str(item["household"].get("head_name") or "")


def _split(name: str) -> tuple[str, str, str]:
    """(family, middle, given) of a name in NFC: first word, the words between, last word."""
    words = name.split()
    if len(words) < 2:
        return ("", "", words[0] if words else "")
    return words[0], " ".join(words[1:-1]), words[-1]


def _given(name: str) -> str:
    return _split(name)[2]


def _distance_deg(hamlet: DemoUnit, point: shapely.Point) -> float:
    """Planar distance in degrees: enough to rank a few siblings by nearness (no polygon: far)."""
    return math.inf if hamlet.geometry is None else float(hamlet.geometry.distance(point))


def _compound_numbering(number: str, rng: np.random.Generator) -> tuple[str, int]:
    """The compound's base number and its first free sub-number: after the anchor's own
    ``N/M``, or ``N/1`` on from a plain ``N`` (a random N when the anchor has no number)."""
    head, slash, tail = number.partition("/")
    if slash and head.isdigit() and tail.isdigit():
        return head, int(tail) + 1
    match = _LEADING_NUMBER.match(number)
    return (match.group() if match else str(int(rng.integers(1, 300)))), 1


def _next_door_number(number: str, rng: np.random.Generator) -> str:
    """A neighbour's house number: a few doors along (``12`` → ``13``, ``12/3`` → ``12/4``),
    the same "Tổ", or none when the first has none."""
    if not number or number.startswith("Tổ"):
        return number
    step = int(rng.choice((-2, -1, 1, 2)))
    head, slash, tail = number.partition("/")
    if slash and tail.isdigit():
        return f"{head}/{max(1, int(tail) + step)}"
    match = _LEADING_NUMBER.match(number)
    return str(max(1, int(match.group()) + step)) if match else ""


# --- variations ------------------------------------------------------------------------------


def _strip_diacritics(text: str) -> str:
    """What a phone without a Vietnamese keyboard sends: no marks, ``đ`` → ``d``."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def _typo(name: str, rng: np.random.Generator) -> str:
    """One slip on one word: a neighbouring key, a dropped, doubled or swapped letter."""
    words = name.split()
    index = int(rng.integers(len(words)))
    word = words[index]
    at = int(rng.integers(len(word)))
    slip = int(rng.integers(4))
    if slip == 0:
        base = _strip_diacritics(word[at]).lower()
        word = word[:at] + _ADJACENT_KEYS.get(base, "a") + word[at + 1 :]
    elif slip == 1 and len(word) >= 3:
        word = word[:at] + word[at + 1 :]
    elif slip == 2 or len(word) < 2:
        word = word[:at] + word[at] + word[at:]
    else:
        at = min(at, len(word) - 2)
        word = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    words[index] = word
    return " ".join(words)


def _vary_name(name: str, variation: str, rng: np.random.Generator) -> str:
    """The name as a second surveyor writes it."""
    family, middle, given = _split(name)
    if variation == "no_diacritics":
        return _strip_diacritics(name)
    if variation == "nfd":
        return unicodedata.normalize("NFD", name)
    if variation == "typo":
        return _typo(name, rng)
    if variation == "no_diacritics_typo":
        return _typo(_strip_diacritics(name), rng)
    if variation == "given_only":
        return given if rng.random() < 0.8 or not middle else f"{middle} {given}"
    if variation == "case_spacing":
        cased = name.upper() if rng.random() < 0.5 else name.lower()
        return "  ".join(cased.split()) + " "
    if variation == "no_middle":
        return f"{family} {given}" if family else name
    if variation == "reordered":
        return f"{given} {family} {middle}".strip()
    return name


def _rewrite_house_number(number: str, rng: np.random.Generator) -> str:
    """The same house number written another way: spaces, "Số", lower case."""
    forms = (number.replace("/", " / "), f"Số {number}", number.lower(), f" {number} ")
    return forms[int(rng.integers(len(forms)))]


def _phone_style(digits: str, style: str) -> str:
    """A 10-digit mobile number as people type it."""
    rest = digits[1:]
    forms = {
        "plain": digits,
        "grouped": f"{digits[:4]} {digits[4:7]} {digits[7:]}",
        "international": f"+84 {rest[:3]} {rest[3:6]} {rest[6:]}",
        "dotted": f"{digits[:4]}.{digits[4:7]}.{digits[7:]}",
        "country": f"84{rest}",
        "dashed": f"{digits[:4]}-{digits[4:7]}-{digits[7:]}",
    }
    return forms[style]


# --- detection and measurement ---------------------------------------------------------------


def facts_from_item(item: Item, *, id: int, commune_code: str | None) -> HouseholdFacts:
    """The scoring facts of a submission item, its text normalised as intake stores it."""
    household = item["household"]
    return HouseholdFacts(
        id=id,
        hamlet_code=item.get("hamlet_code"),
        commune_code=commune_code,
        head_name=normalise_text(household.get("head_name")),
        house_number=normalise_text(household.get("house_number")),
        phone=normalise_phone(household.get("phone")),
        kind=household.get("kind"),
        accuracy_m=item["location"].get("accuracy_m"),
    )


def metric_points(items: Sequence[Item]) -> FloatArray:
    """Item locations as UTM metres (EPSG:32648 in the delta), one row per item."""
    lon = np.array([i["location"]["lon"] for i in items], dtype=float)
    lat = np.array([i["location"]["lat"] for i in items], dtype=float)
    x, y = transformer_from_wgs84(utm_crs_for(float(np.mean(lon)))).transform(lon, lat)
    return np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])


def find_candidates(
    points_m: FloatArray, facts: Sequence[HouseholdFacts], params: DedupeParams = DEFAULT_PARAMS
) -> dict[tuple[int, int], float]:
    """Candidate pairs (index i < j → distance in metres): within the pair's search radius, or
    sharing a phone in one commune."""
    tree = shapely.STRtree(shapely.points(points_m))
    left, right = tree.query(
        shapely.points(points_m), predicate="dwithin", distance=max_search_radius_m(params)
    )
    found: dict[tuple[int, int], float] = {}
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        if i < j:
            distance = float(np.hypot(*(points_m[i] - points_m[j])))
            if distance <= search_radius_m(facts[i].accuracy_m, facts[j].accuracy_m, params):
                found[(i, j)] = distance
    for i, j in _same_phone_pairs(facts):
        found.setdefault((i, j), float(np.hypot(*(points_m[i] - points_m[j]))))
    return found


def _same_phone_pairs(facts: Sequence[HouseholdFacts]) -> Iterable[tuple[int, int]]:
    by_phone: dict[tuple[str | None, str], list[int]] = defaultdict(list)
    for index, fact in enumerate(facts):
        if fact.phone:
            by_phone[(fact.commune_code, fact.phone)].append(index)
    for members in by_phone.values():
        for n, i in enumerate(members):
            for j in members[n + 1 :]:
                yield (i, j) if i < j else (j, i)


def detect(eval_set: EvalSet, params: DedupeParams = DEFAULT_PARAMS) -> dict[Pair, PairScore]:
    """Score every candidate pair of the set's items: item-id pair → score."""
    items = eval_set.items()
    facts = [
        facts_from_item(item, id=n, commune_code=eval_set.commune_of.get(item["hamlet_code"]))
        for n, item in enumerate(items)
    ]
    candidates = find_candidates(metric_points(items), facts, params)
    return {
        frozenset((items[i]["id"], items[j]["id"])): score_pair(facts[i], facts[j], d, params)
        for (i, j), d in candidates.items()
    }


def predicted(scores: dict[Pair, PairScore], params: DedupeParams = DEFAULT_PARAMS) -> set[Pair]:
    """The pairs at or above the review threshold."""
    return {pair for pair, score in scores.items() if score.score >= params.review_threshold}


def grouped(pairs: Iterable[Pair]) -> set[Pair]:
    """Every pair inside the groups the pairs form (A~B, B~C → also A~C), as review shows."""
    ids = sorted({member for pair in pairs for member in pair})
    index = {item_id: n for n, item_id in enumerate(ids)}
    groups: dict[int, list[str]] = defaultdict(list)
    links = (tuple(index[m] for m in pair) for pair in pairs)
    for member, group in group_pairs((a, b) for a, b in links).items():
        groups[group].append(ids[member])
    return {
        frozenset((a, b)) for members in groups.values() for a in members for b in members if a < b
    }


def evaluate(predicted_pairs: Iterable[Pair], labels: Iterable[Pair]) -> Evaluation:
    """Precision, recall and F1 of predicted duplicate pairs against the true pairs."""
    guess, truth = set(predicted_pairs), set(labels)
    tp = len(guess & truth)
    fp, fn = len(guess) - tp, len(truth) - tp
    precision = tp / (tp + fp) if guess else 1.0
    recall = tp / (tp + fn) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Evaluation(precision, recall, f1, {"tp": tp, "fp": fp, "fn": fn})


def errors_by_case(predicted_pairs: Iterable[Pair], eval_set: EvalSet) -> dict[str, int]:
    """False positives and negatives, by the case of the variant items involved."""
    guess = set(predicted_pairs)
    counts: Counter[str] = Counter()
    for pair in guess - eval_set.labels:
        cases = sorted(eval_set.cases.get(m, "base") for m in pair)
        counts[f"fp:{'+'.join(cases)}"] += 1
    counts["fn:resurvey"] = len(eval_set.labels - guess)
    return dict(sorted(counts.items()))
