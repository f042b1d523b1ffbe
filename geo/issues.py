"""Validation issues: the stable rule codes, what each does to an item, and its message.

The table mirrors PRODUCT.md's validation rules. ``effect`` decides the item's outcome:
``reject`` → ``rejected``, ``flag`` → ``flagged`` (held for review), ``warn``/``info`` →
accepted with the issue attached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Effect = Literal["reject", "flag", "warn", "info"]
Severity = Literal["error", "warning", "info"]
Outcome = Literal["accepted", "flagged", "rejected"]

_SEVERITY: dict[Effect, Severity] = {
    "reject": "error",
    "flag": "warning",
    "warn": "warning",
    "info": "info",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """A validation rule: its effect on the outcome and its Vietnamese message."""

    code: str
    effect: Effect
    message: str


RULES: dict[str, Rule] = {
    rule.code: rule
    for rule in (
        Rule("coordinates_invalid", "reject", "Tọa độ thiếu hoặc không hợp lệ (vĩ độ -90..90, kinh độ -180..180)."),
        Rule("item_invalid", "reject", "Dữ liệu hộ không hợp lệ: {field}."),
        Rule("outside_service_area", "reject", "Vị trí nằm ngoài địa bàn phục vụ (không thuộc xã/phường nào đã nhập)."),
        Rule("latlon_swapped", "info", "Có thể vĩ độ và kinh độ bị đảo: đảo lại thì điểm nằm trong địa bàn."),
        Rule("accuracy_missing", "warn", "Thiếu độ chính xác GPS."),
        Rule("accuracy_poor", "flag", "Độ chính xác GPS kém ({accuracy_m} m, ngưỡng {limit_m} m): cần kiểm tra."),
        Rule("accuracy_unusable", "reject", "Độ chính xác GPS quá kém ({accuracy_m} m, tối đa {limit_m} m): hãy đo lại."),
        Rule("hamlet_unknown", "flag", "Không có ấp/khóm mã '{hamlet_code}' tại thời điểm thu thập."),
        Rule("hamlet_mismatch", "flag", "Vị trí nằm ngoài ấp/khóm đã chọn ({claimed})."),
        Rule("near_boundary", "warn", "Vị trí gần ranh giới ấp/xã; đã chấp nhận."),
        Rule("outside_team_area", "reject", "Ấp/khóm '{hamlet_code}' không thuộc địa bàn của tổ."),
        Rule("name_missing", "flag", "Thiếu họ tên chủ hộ."),
        Rule("phone_invalid", "warn", "Số điện thoại không hợp lệ (di động 10 số bắt đầu 03/05/07/08/09, cố định 11 số bắt đầu 02); đã giữ nguyên văn bản gốc."),
        Rule("house_number_invalid", "warn", "Số nhà không hợp lệ (ký tự điều khiển hoặc quá 32 ký tự)."),
        Rule("captured_in_future", "flag", "Thời điểm thu thập ở tương lai so với máy chủ: kiểm tra đồng hồ điện thoại."),
        Rule("captured_too_old", "flag", "Thời điểm thu thập quá cũ (quá {max_age_days} ngày)."),
        Rule("postcode_missing", "warn", "Xã/phường chưa có mã bưu chính: mã địa chỉ sẽ được cấp khi có mã bưu chính."),
        Rule("mock_location", "flag", "Thiết bị báo vị trí giả lập."),
        Rule("possible_duplicate", "flag", "Có thể trùng với hộ đã thu thập: chờ kiểm duyệt."),
        Rule("sent_back", "flag", "Người kiểm duyệt trả lại để xác minh: {reason}"),
        Rule("duplicate_linked", "info", "Trùng khớp hoàn toàn với hộ {household_id} (cùng tên, số điện thoại, vị trí): đã tự động gộp vào hộ đó."),
    )
}  # fmt: skip


@dataclass(slots=True)
class Issue:
    """One finding about an item: stable code, severity, Vietnamese message, detail."""

    code: str
    severity: Severity
    message: str
    detail: dict[str, Any] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        """The API/JSON shape ``{"code", "severity", "message", "detail"}``."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "detail": self.detail,
        }


def make_issue(code: str, detail: dict[str, Any] | None = None) -> Issue:
    """The issue for rule ``code``, its message filled from ``detail``.

    >>> make_issue("accuracy_poor", {"accuracy_m": 42.0, "limit_m": 30.0}).severity
    'warning'
    """
    rule = RULES[code]
    try:
        message = rule.message.format(**(detail or {}))
    except (KeyError, IndexError):
        message = rule.message.split("{", 1)[0].rstrip(" :(") + "."
    return Issue(code, _SEVERITY[rule.effect], message, detail)


def outcome(issues: list[Issue]) -> Outcome:
    """The item's outcome: any rejecting rule rejects, else any flagging rule flags.

    >>> outcome([make_issue("accuracy_missing")])
    'accepted'
    >>> outcome([make_issue("name_missing"), make_issue("coordinates_invalid")])
    'rejected'
    """
    effects = {RULES[i.code].effect for i in issues}
    if "reject" in effects:
        return "rejected"
    if "flag" in effects:
        return "flagged"
    return "accepted"
