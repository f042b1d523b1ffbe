// The review page: duplicate pairs and flagged households of a chosen commune (or hamlet), each
// with a small map of the points and their GPS accuracy circles, and the API's decisions as
// buttons: merge / distinct / undo (POST /api/v1/duplicates/...), accept / reject / send back
// (POST /api/v1/reviews/...). The page decides nothing itself.
import { api, el, fmt, login, STATUS_LABELS, toast } from "./common.js";

const PAGE_SIZE = 50;
const state = { tab: "duplicates", unit: null };
window.diachiso = { state };

// --- small maps: points and accuracy circles in local metres (SVG, no basemap) --------------

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#1c7ed6", "#d6336c", "#f08c00"];

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A 230 × 190 map of households [{lon, lat, accuracy_m, label}] with a scale bar. */
function miniMap(points) {
  const W = 230, H = 190;
  const lat0 = points.reduce((s, p) => s + p.lat, 0) / points.length;
  const lon0 = points.reduce((s, p) => s + p.lon, 0) / points.length;
  // Metres east/north of the centre (equirectangular: exact enough over tens of metres).
  const xy = points.map((p) => [(p.lon - lon0) * 111320 * Math.cos((lat0 * Math.PI) / 180), (p.lat - lat0) * 110540]);
  const reach = Math.max(12, ...points.map((p, i) => Math.hypot(...xy[i]) + (p.accuracy_m || 5)));
  const scale = (Math.min(W, H) / 2 - 14) / reach;
  const root = svg("svg", { class: "mini", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Bản đồ vị trí các hộ" });
  const cx = W / 2, cy = H / 2 - 6;
  root.append(svg("path", { d: gridPath(W, H, cx, cy, scale), stroke: "#dde3ea", "stroke-width": 1, fill: "none" }));
  points.forEach((p, i) => {
    const x = cx + xy[i][0] * scale, y = cy - xy[i][1] * scale;
    const colour = COLOURS[i % COLOURS.length];
    root.append(svg("circle", { cx: x, cy: y, r: Math.max(2, (p.accuracy_m || 0) * scale), fill: colour, "fill-opacity": 0.12, stroke: colour, "stroke-dasharray": "3 2" }));
  });
  if (points.length === 2) {
    const [a, b] = xy.map(([x, y]) => [cx + x * scale, cy - y * scale]);
    root.append(svg("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], stroke: "#495057", "stroke-width": 1 }));
  }
  points.forEach((p, i) => {
    const x = cx + xy[i][0] * scale, y = cy - xy[i][1] * scale;
    root.append(svg("circle", { cx: x, cy: y, r: 5, fill: COLOURS[i % COLOURS.length], stroke: "#fff", "stroke-width": 1.5 }));
    root.append(svg("text", { x: x + 7, y: y - 6, "font-weight": 700 }, p.label));
  });
  const bar = niceMetres(reach / 2);
  root.append(
    svg("line", { x1: 10, y1: H - 12, x2: 10 + bar * scale, y2: H - 12, stroke: "#33404f", "stroke-width": 2 }),
    svg("text", { x: 12 + bar * scale, y: H - 8 }, `${bar} m`),
  );
  return root;
}

function niceMetres(m) {
  return [1, 2, 5, 10, 20, 50, 100, 200, 500].reduce((best, v) => (v <= m ? v : best), 1);
}

function gridPath(W, H, cx, cy, scale) {
  const step = niceMetres(40 / scale) * scale;
  let d = "";
  for (let x = cx % step; x < W; x += step) d += `M${x.toFixed(1)},0V${H}`;
  for (let y = cy % step; y < H; y += step) d += `M0,${y.toFixed(1)}H${W}`;
  return d;
}

// --- lists ---------------------------------------------------------------------------------

function householdFacts(h) {
  return [
    el("div", { class: "who" }, h.head_name || "(chưa có tên)", " ", el("span", { class: `chip ${h.status}` }, STATUS_LABELS[h.status] || h.status)),
    el("div", {}, `#${h.id} · ${[h.house_number, h.street].filter(Boolean).join(", ") || "không số nhà"}`),
    el("div", {}, `Điện thoại: ${h.phone || h.phone_raw || "—"} · ${h.members ?? "?"} người`),
    el("div", {}, `Ấp ${h.hamlet_code || "—"} · thu ${fmt.dateTime(h.captured_at)} · sai số ${fmt.metres(h.accuracy_m)}`),
  ];
}

function reasonItem(reason) {
  const sign = reason.value > 0 ? "pos" : reason.value < 0 ? "neg" : "";
  const value = `${reason.value > 0 ? "+" : ""}${Number(reason.value).toLocaleString("vi-VN", { maximumFractionDigits: 2 })}`;
  return el("li", {}, reason.message || reason.code, " ", el("span", { class: `v ${sign}` }, `(${value})`));
}

function button(label, kind, testid, action) {
  const node = el("button", { type: "button", class: `btn ${kind}`, "data-testid": testid }, label);
  node.addEventListener("click", async () => {
    node.disabled = true;
    try {
      await action();
    } catch (exc) {
      toast(exc.message, "error");
    } finally {
      node.disabled = false;
    }
  });
  return node;
}

async function duplicateCard(candidate) {
  const [a, b] = await Promise.all(candidate.households.map((id) => api(`/api/v1/households/${id}`)));
  const resolve = async (body, done) => {
    await api(`/api/v1/duplicates/${candidate.id}/resolve`, { method: "POST", body });
    toast(done, "ok");
    await refresh();
  };
  const actions = candidate.status === "open"
    ? [
        button(`Gộp, giữ A (#${a.id})`, "brand", "merge-a", () => resolve({ action: "merge", keep: a.id }, `Đã gộp #${b.id} vào #${a.id}.`)),
        button(`Gộp, giữ B (#${b.id})`, "", "merge-b", () => resolve({ action: "merge", keep: b.id }, `Đã gộp #${a.id} vào #${b.id}.`)),
        button("Không trùng", "", "distinct", () => resolve({ action: "distinct" }, "Đã đánh dấu hai hộ khác nhau.")),
      ]
    : [
        el("span", { class: "status-line" }, `${candidate.status === "merged" ? "Đã gộp" : "Không trùng"} lúc ${fmt.dateTime(candidate.resolved_at)}`),
        button("Hoàn tác", "danger", "undo", async () => {
          await api(`/api/v1/duplicates/${candidate.id}/reopen`, { method: "POST" });
          toast("Đã hoàn tác: cặp được mở lại.", "ok");
          await refresh();
        }),
      ];
  const held = candidate.held ? ` · đang giữ hộ #${candidate.held}` : "";
  return el("article", { class: "item", "data-testid": "duplicate", dataset: { id: candidate.id } },
    el("div", {},
      el("h3", {}, `Cặp nghi trùng #${candidate.id} `, el("span", { class: "score" }, `điểm ${Number(candidate.score).toFixed(2)}`)),
      el("div", { class: "meta" }, `Nhóm ${candidate.group} · cách nhau ${fmt.metres(candidate.distance_m)} · xã ${candidate.commune_code || "—"}${held}`),
      el("div", { class: "pair" },
        el("div", {}, el("span", { class: "badge a" }, "A"), ...householdFacts(a)),
        el("div", {}, el("span", { class: "badge b" }, "B"), ...householdFacts(b)),
      ),
      el("strong", {}, "Lý do"),
      el("ul", { class: "reasons" }, (candidate.reasons || []).map(reasonItem)),
      el("div", { class: "actions" }, actions),
    ),
    el("div", {},
      miniMap([{ ...a, label: "A" }, { ...b, label: "B" }]),
      el("div", { class: "mini-caption" }, "vòng nét đứt: sai số GPS"),
    ),
  );
}

function flaggedCard(h) {
  const reason = el("textarea", { placeholder: "Lý do (bắt buộc, tổ sẽ thấy khi gửi lại)", "aria-label": "Lý do", "data-testid": "reason" });
  const decide = async (action, done) => {
    const text = reason.value.trim();
    if (!text) {
      toast("Hãy ghi lý do trước khi quyết định.", "error");
      reason.focus();
      return;
    }
    await api(`/api/v1/reviews/${h.id}`, { method: "POST", body: { action, reason: text } });
    toast(done, "ok");
    await refresh();
  };
  return el("article", { class: "item", "data-testid": "flagged", dataset: { id: h.id } },
    el("div", {},
      el("h3", {}, h.head_name || "(chưa có tên chủ hộ)"),
      el("div", { class: "meta" }, `Hộ #${h.id} · ${h.commune_code || ""} / ${h.hamlet_code || ""}`),
      el("div", { class: "pair" }, el("div", {}, ...householdFacts(h))),
      el("strong", {}, "Vấn đề"),
      el("ul", { class: "issues" }, (h.issues || []).map((i) => el("li", {}, i.message || i.code))),
      el("div", { class: "actions" },
        reason,
        button("Chấp nhận", "primary", "accept", () => decide("accept", `Đã chấp nhận hộ #${h.id}.`)),
        button("Từ chối", "danger", "reject", () => decide("reject", `Đã từ chối hộ #${h.id}.`)),
        button("Gửi lại tổ", "", "send-back", () => decide("send_back", `Đã gửi hộ #${h.id} lại cho tổ.`)),
      ),
    ),
    el("div", {}, miniMap([{ ...h, label: `#${h.id}` }]), el("div", { class: "mini-caption" }, "vòng nét đứt: sai số GPS")),
  );
}

// --- page ----------------------------------------------------------------------------------

async function refresh() {
  const unit = document.getElementById("hamlet").value || document.getElementById("commune").value;
  if (!unit) return;
  state.unit = unit;
  const status = document.getElementById("dup-status").value;
  const q = `unit=${encodeURIComponent(unit)}&limit=${PAGE_SIZE}`;
  const [duplicates, flagged] = await Promise.all([
    api(`/api/v1/duplicates?${q}&status=${status}`),
    api(`/api/v1/households?${q}&status=flagged`),
  ]);
  document.getElementById("count-duplicates").textContent = duplicates.items.length + (duplicates.next_cursor ? "+" : "");
  document.getElementById("count-flagged").textContent = flagged.items.length + (flagged.next_cursor ? "+" : "");
  const list = document.getElementById("items");
  const cards = state.tab === "duplicates"
    ? await Promise.all(duplicates.items.map(duplicateCard))
    : flagged.items.map(flaggedCard);
  const none = state.tab === "duplicates" ? "Không có cặp nghi trùng nào." : "Không có hộ nào cần xem lại.";
  list.replaceChildren(...(cards.length ? cards : [el("div", { class: "card empty" }, none)]));
  document.getElementById("status-line").textContent = `Cập nhật ${new Date().toLocaleTimeString("vi-VN")}`;
  window.reviewReady = true;
}

async function loadCommunes() {
  const communes = (await api("/api/v1/coverage?level=commune&limit=1000")).items;
  // Where the work is: communes with open pairs or flagged households first.
  communes.sort((a, b) => b.open_duplicates + b.flagged - (a.open_duplicates + a.flagged) || a.code.localeCompare(b.code));
  const select = document.getElementById("commune");
  select.replaceChildren(
    ...communes.map((c) => el("option", { value: c.code }, `${c.name} (${c.code}) — ${c.open_duplicates} trùng, ${c.flagged} cờ`)),
  );
  const wanted = new URLSearchParams(location.search).get("unit");
  if (wanted && communes.some((c) => c.code === wanted)) select.value = wanted;
  await loadHamlets();
}

async function loadHamlets() {
  const commune = document.getElementById("commune").value;
  const hamlets = commune ? (await api(`/api/v1/coverage?parent=${encodeURIComponent(commune)}&level=hamlet&limit=1000`)).items : [];
  document.getElementById("hamlet").replaceChildren(
    el("option", { value: "" }, "Tất cả"),
    ...hamlets.map((h) => el("option", { value: h.code }, `${h.name} — ${h.open_duplicates} trùng, ${h.flagged} cờ`)),
  );
}

function selectTab(tab) {
  state.tab = tab;
  for (const name of ["duplicates", "flagged"]) {
    document.getElementById(`tab-${name}`).setAttribute("aria-selected", String(name === tab));
  }
  refresh().catch((exc) => toast(exc.message, "error"));
}

async function main() {
  await login();
  document.getElementById("commune").addEventListener("change", async () => {
    await loadHamlets();
    await refresh();
  });
  document.getElementById("hamlet").addEventListener("change", () => refresh());
  document.getElementById("dup-status").addEventListener("change", () => refresh());
  document.getElementById("tab-duplicates").addEventListener("click", () => selectTab("duplicates"));
  document.getElementById("tab-flagged").addEventListener("click", () => selectTab("flagged"));
  await loadCommunes();
  await refresh();
}

main().catch((exc) => toast(exc.message, "error"));
