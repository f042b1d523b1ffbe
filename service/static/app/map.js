// The coverage map: units from /api/v1/tiles/units as a choropleth of coverage, households from
// /api/v1/tiles/households, the selected unit's counts, children and daily progress from
// /api/v1/coverage. Drill-down: province → commune → hamlet (click on the map or in the table).
import * as maplibregl from "/static/vendor/maplibre-gl/maplibre-gl.mjs";
import { api, authorise, el, fmt, LEVEL_LABELS, login, STATUS_LABELS, toast } from "./common.js";

const COVERAGE_COLOURS = [
  "step", ["get", "coverage_pct"], "#d7301f", 25, "#fc8d59", 50, "#fdcc8a", 75, "#a6d96a", 90, "#1a9641",
];
const STATUS_COLOURS = ["match", ["get", "status"], "accepted", "#2b8a3e", "flagged", "#f08c00", "#c92a2a"];
const CHILD_LEVEL = { province: "commune", district: "commune", commune: "hamlet" };

const state = { path: [], current: null, children: [], level: "commune", sort: { key: "coverage_pct", dir: 1 } };
window.diachiso = { state };

function style() {
  const basemap = document.querySelector('meta[name="diachiso-basemap"]').content;
  const sources = {
    units: { type: "vector", tiles: tileUrls("units", "commune"), minzoom: 0, maxzoom: 16 },
    households: { type: "vector", tiles: tileUrls("households"), minzoom: 0, maxzoom: 17 },
    selected: { type: "geojson", data: { type: "FeatureCollection", features: [] } },
  };
  const layers = [{ id: "background", type: "background", paint: { "background-color": "#e9eef2" } }];
  if (basemap) {
    sources.basemap = { type: "raster", tiles: [basemap], tileSize: 256 };
    layers.push({ id: "basemap", type: "raster", source: "basemap", paint: { "raster-opacity": 0.9 } });
  }
  const unit = { source: "units", "source-layer": "units" };
  layers.push(
    {
      id: "units-fill", type: "fill", ...unit,
      paint: {
        "fill-color": ["case", ["has", "coverage_pct"], COVERAGE_COLOURS, "#d5dae0"],
        "fill-opacity": ["case", ["get", "drafted"], 0.45, 0.7],
      },
    },
    {
      id: "units-line", type: "line", ...unit, filter: ["!", ["get", "drafted"]],
      paint: { "line-color": "#3d4b5c", "line-width": ["interpolate", ["linear"], ["zoom"], 8, 0.6, 14, 1.4] },
    },
    {
      id: "units-line-drafted", type: "line", ...unit, filter: ["get", "drafted"],
      paint: { "line-color": "#3d4b5c", "line-width": 1.4, "line-dasharray": [2, 2] },
    },
    {
      id: "units-selected", type: "line", ...unit, filter: ["==", ["get", "code"], ""],
      paint: { "line-color": "#0d4f64", "line-width": 3.5 },
    },
    {
      id: "selected-outline", type: "line", source: "selected",
      paint: { "line-color": "#0d4f64", "line-width": 3, "line-opacity": 0.9 },
    },
    {
      id: "households-clusters", type: "circle", source: "households", "source-layer": "households",
      minzoom: 12, filter: ["has", "count"],
      paint: {
        "circle-color": ["case", [">", ["get", "flagged"], 0], "#f08c00", "#2b8a3e"],
        "circle-opacity": 0.7,
        "circle-radius": ["interpolate", ["linear"], ["sqrt", ["get", "count"]], 1, 2, 10, 6, 30, 11],
        "circle-stroke-color": "#ffffff",
        "circle-stroke-width": 0.6,
      },
    },
    {
      id: "households-points", type: "circle", source: "households", "source-layer": "households",
      minzoom: 14, filter: ["has", "status"],
      paint: {
        "circle-color": STATUS_COLOURS,
        "circle-radius": ["interpolate", ["linear"], ["zoom"], 14, 3, 18, 7],
        "circle-stroke-color": "#ffffff",
        "circle-stroke-width": 1,
      },
    },
  );
  return { version: 8, sources, layers };
}

/** Tile URLs of a layer; units of a fixed level (the drill-down's), not the zoom's default. */
function tileUrls(layer, level) {
  const query = level ? `?level=${level}` : "";
  return [`${location.origin}/api/v1/tiles/${layer}/{z}/{x}/{y}.mvt${query}`];
}

function createMap() {
  const map = new maplibregl.Map({
    container: "map",
    style: style(),
    center: [106.0, 10.3],
    zoom: 8,
    maxZoom: 19,
    transformRequest: authorise,
    attributionControl: false,
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-right");
  window.diachisoMap = map;
  return map;
}

// --- selecting a unit ----------------------------------------------------------------------------

async function select(map, code) {
  const unit = await api(`/api/v1/coverage/${encodeURIComponent(code)}?series=daily`);
  state.current = unit;
  state.path = await pathTo(unit);
  const childLevel = CHILD_LEVEL[unit.level];
  state.children = childLevel
    ? (await api(`/api/v1/coverage?parent=${encodeURIComponent(code)}&level=${childLevel}&limit=1000`)).items
    : [];
  map.setFilter("units-selected", ["==", ["get", "code"], code]);
  showLevel(map, childLevel || unit.level);
  zoomTo(map, unit);
  outline(map, unit).catch(showError);
  renderCrumbs(map);
  renderSummary(unit);
  renderChart(unit);
  renderTable(map);
  document.getElementById("hint").textContent = childLevel
    ? `Bấm vào một ${LEVEL_LABELS[childLevel].toLowerCase()} để xem chi tiết`
    : "Bấm vào một hộ để xem thông tin và lịch sử";
}

async function pathTo(unit) {
  const path = [unit];
  let parent = unit.parent_code;
  while (parent && path.length < 5) {
    const known = state.path.find((u) => u.code === parent);
    const next = known || (await api(`/api/v1/coverage/${encodeURIComponent(parent)}`).catch(() => null));
    if (!next) break;
    path.unshift(next);
    parent = next.parent_code;
  }
  return path;
}

/** The selected unit's own boundary (its level may not be the one the tiles draw). */
async function outline(map, unit) {
  const features = [];
  if (unit.outline === "polygon") {
    const full = await api(`/api/v1/units/${encodeURIComponent(unit.code)}?geometry=true`);
    if (full.geometry) features.push({ type: "Feature", geometry: full.geometry, properties: {} });
  }
  map.getSource("selected").setData({ type: "FeatureCollection", features });
}

function showLevel(map, level) {
  if (state.level === level) return;
  state.level = level;
  map.getSource("units").setTiles(tileUrls("units", level));
}

function zoomTo(map, unit) {
  const bounds = unit.bbox || boundsOfRendered(map, unit.code);
  if (bounds) {
    // A hamlet is zoomed in far enough for its households to be single points (zoom 14+).
    const minZoom = unit.level === "hamlet" ? 15 : 0;
    const camera = map.cameraForBounds([[bounds[0], bounds[1]], [bounds[2], bounds[3]]], { padding: 40, maxZoom: 17 });
    if (camera) map.easeTo({ ...camera, zoom: Math.max(camera.zoom, minZoom), duration: 600 });
  }
}

function boundsOfRendered(map, code) {
  const features = map.querySourceFeatures("units", { sourceLayer: "units", filter: ["==", ["get", "code"], code] });
  let box = null;
  for (const feature of features) {
    for (const [x, y] of feature.geometry.coordinates.flat(2)) {
      box = box ? [Math.min(box[0], x), Math.min(box[1], y), Math.max(box[2], x), Math.max(box[3], y)] : [x, y, x, y];
    }
  }
  return box;
}

// --- panel ---------------------------------------------------------------------------------------

function renderCrumbs(map) {
  const crumbs = document.getElementById("crumbs");
  crumbs.replaceChildren();
  state.path.forEach((unit, i) => {
    if (i) crumbs.append(el("span", { class: "sep" }, "›"));
    const current = i === state.path.length - 1;
    const button = el("button", { type: "button", "aria-current": current ? "page" : null }, unit.name);
    button.addEventListener("click", () => select(map, unit.code).catch(showError));
    crumbs.append(button);
  });
}

function kpi(label, value, kind = "") {
  return el("div", { class: `kpi ${kind}` }, el("b", {}, value), el("span", {}, label));
}

function renderSummary(unit) {
  const drafted = unit.outline === "drafted" ? el("span", { class: "tag drafted" }, "ranh giới phác thảo") : null;
  const pct = unit.coverage_pct === null ? 0 : Math.min(100, unit.coverage_pct);
  document.getElementById("summary").replaceChildren(
    el("h2", { "data-testid": "unit-name" }, unit.name, drafted),
    el("div", { class: "sub" }, `${LEVEL_LABELS[unit.level]} · mã ${unit.code} · lần thu gần nhất ${fmt.dateTime(unit.last_captured_at)}`),
    el("div", { class: "kpis" },
      kpi("Chỉ tiêu (hộ)", fmt.int(unit.expected)),
      kpi("Đã thu", fmt.int(unit.captured)),
      kpi("Độ phủ", fmt.pct(unit.coverage_pct), "ok"),
      kpi("Đã chấp nhận", fmt.int(unit.accepted), "ok"),
      kpi("Cần xem lại", fmt.int(unit.flagged), "warn"),
      kpi("Nghi trùng đang mở", fmt.int(unit.open_duplicates), unit.open_duplicates ? "warn" : ""),
    ),
    el("div", { class: "progress" }, el("div", { style: `width:${pct}%` })),
    el("div", { class: "progress-label" },
      el("span", {}, `${fmt.int(unit.accepted)} / ${fmt.int(unit.expected)} hộ đã chấp nhận`),
      el("span", {}, `${fmt.int(unit.rejected)} bị từ chối`)),
  );
}

function renderChart(unit) {
  const box = document.getElementById("chart");
  const days = unit.series || [];
  if (!days.length) {
    box.replaceChildren(el("div", { class: "empty" }, "Chưa có hộ nào được thu."));
    return;
  }
  let captured = 0;
  let accepted = 0;
  const points = days.map((d) => ({ day: d.date, captured: (captured += d.captured), accepted: (accepted += d.accepted) }));
  const W = 430, H = 190, L = 44, R = 10, T = 10, B = 24;
  const top = Math.max(captured, unit.expected || 0, 1);
  const x = (i) => L + (points.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (points.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const line = (key) => points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Số hộ cộng dồn theo ngày" });
  svg.append(
    svgEl("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svgText(L - 4, y(top) + 4, fmt.int(top), "end"),
    svgText(L - 4, H - B + 4, "0", "end"),
    svgText(L, H - 6, fmt.day(points[0].day), "start"),
    svgText(W - R, H - 6, fmt.day(points[points.length - 1].day), "end"),
  );
  if (unit.expected) {
    svg.append(svgEl("line", { x1: L, y1: y(unit.expected), x2: W - R, y2: y(unit.expected), stroke: "#868e96", "stroke-dasharray": "4 3" }));
    svg.append(svgText(W - R, y(unit.expected) - 4, `chỉ tiêu ${fmt.int(unit.expected)}`, "end"));
  }
  svg.append(
    svgEl("path", { d: line("captured"), fill: "none", stroke: "#1c7ed6", "stroke-width": 2 }),
    svgEl("path", { d: line("accepted"), fill: "none", stroke: "#2b8a3e", "stroke-width": 2.5 }),
  );
  points.forEach((p, i) => {
    svg.append(svgEl("circle", { cx: x(i), cy: y(p.captured), r: 2.5, fill: "#1c7ed6" }));
    svg.append(svgEl("circle", { cx: x(i), cy: y(p.accepted), r: 3, fill: "#2b8a3e" }));
  });
  const legend = el("div", { class: "chart-legend" },
    el("span", {}, el("i", { style: "background:#1c7ed6" }), "đã thu (cộng dồn)"),
    el("span", {}, el("i", { style: "background:#2b8a3e" }), "đã chấp nhận"),
    el("span", {}, `${unit.teams.length} tổ`),
  );
  box.replaceChildren(svg, legend);
}

function svgEl(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function svgText(x, y, text, anchor) {
  const node = svgEl("text", { x, y, "text-anchor": anchor });
  node.textContent = text;
  return node;
}

function renderTable(map) {
  const unit = state.current;
  const childLevel = CHILD_LEVEL[unit.level];
  document.getElementById("table-title").textContent = childLevel
    ? `${LEVEL_LABELS[childLevel]} của ${unit.name} (${state.children.length})`
    : `Tổ đã thu ở ${unit.name}`;
  const rows = childLevel ? sorted(state.children) : [];
  const body = document.querySelector("#units tbody");
  body.replaceChildren(...rows.map((child) => unitRow(map, child)));
  if (!childLevel) body.replaceChildren(...teamRows(unit));
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "Không có dữ liệu.")));
  for (const th of document.querySelectorAll("#units th")) {
    th.setAttribute("aria-sort", th.dataset.key === state.sort.key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

function unitRow(map, child) {
  const drafted = child.outline === "drafted" ? el("span", { class: "tag drafted" }, "phác thảo") : null;
  const row = el("tr", { dataset: { code: child.code } },
    el("td", {}, child.name, drafted),
    el("td", {}, fmt.int(child.expected)),
    el("td", {}, fmt.int(child.captured)),
    el("td", {}, fmt.int(child.accepted)),
    el("td", {}, fmt.int(child.flagged)),
    el("td", {}, fmt.int(child.open_duplicates)),
    el("td", {}, pctCell(child.coverage_pct)),
  );
  row.addEventListener("click", () => select(map, child.code).catch(showError));
  return row;
}

function teamRows(unit) {
  return (unit.teams || []).map((team) =>
    el("tr", {},
      el("td", {}, team.team || "(không thuộc tổ)"),
      el("td", {}, "—"),
      el("td", {}, fmt.int(team.captured)),
      el("td", {}, fmt.int(team.accepted)),
      el("td", {}, fmt.int(team.flagged)),
      el("td", {}, "—"),
      el("td", {}, `${team.series.length} ngày`),
    ),
  );
}

function pctCell(pct) {
  const colour = pct === null ? "#d5dae0" : pct >= 90 ? "#1a9641" : pct >= 75 ? "#a6d96a" : pct >= 50 ? "#fdcc8a" : pct >= 25 ? "#fc8d59" : "#d7301f";
  const width = pct === null ? 0 : Math.min(100, pct);
  return el("span", { class: "pct" }, fmt.pct(pct), el("i", {}, el("u", { style: `width:${width}%;background:${colour}` })));
}

function sorted(items) {
  const { key, dir } = state.sort;
  const value = (item) => (item[key] === null || item[key] === undefined ? -Infinity : item[key]);
  return [...items].sort((a, b) =>
    key === "name" ? dir * a.name.localeCompare(b.name, "vi", { numeric: true }) : dir * (value(a) - value(b)) || a.code.localeCompare(b.code),
  );
}

// --- map interaction -----------------------------------------------------------------------------

async function showHousehold(map, feature, lngLat) {
  const household = await api(`/api/v1/households/${feature.id}`);
  const history = (household.history || []).map((v) =>
    el("li", {}, `${fmt.dateTime(v.at)} — ${v.reason}${v.data && v.data.status ? ` (${STATUS_LABELS[v.data.status] || v.data.status})` : ""}`),
  );
  const content = el("div", { class: "popup", "data-testid": "household-popup" },
    el("h4", {}, household.head_name || "(chưa có tên chủ hộ)", " ", el("span", { class: `chip ${household.status}` }, STATUS_LABELS[household.status])),
    el("dl", {},
      el("dt", {}, "Mã hộ"), el("dd", {}, `#${household.id}`),
      el("dt", {}, "Mã địa chỉ"), el("dd", {}, household.address_code || "chưa cấp"),
      el("dt", {}, "Địa chỉ"), el("dd", {}, [household.house_number, household.street].filter(Boolean).join(", ") || "—"),
      el("dt", {}, "Ấp/khóm"), el("dd", {}, household.hamlet_code || "—"),
      el("dt", {}, "Thu lúc"), el("dd", {}, fmt.dateTime(household.captured_at)),
      el("dt", {}, "Sai số GPS"), el("dd", {}, fmt.metres(household.accuracy_m)),
      el("dt", {}, "Vấn đề"), el("dd", {}, (household.issues || []).map((i) => i.message).join("; ") || "không"),
    ),
    el("strong", {}, "Lịch sử"),
    el("ol", {}, history),
  );
  new maplibregl.Popup({ maxWidth: "360px" }).setLngLat(lngLat).setDOMContent(content).addTo(map);
}

function wireMap(map) {
  const tooltip = document.getElementById("tooltip");
  map.on("mousemove", (event) => {
    const [feature] = map.queryRenderedFeatures(event.point, { layers: ["households-points", "units-fill"] });
    map.getCanvas().style.cursor = feature ? "pointer" : "";
    if (!feature || feature.layer.id !== "units-fill") {
      tooltip.style.display = "none";
      return;
    }
    const p = feature.properties;
    tooltip.textContent = `${p.name} · ${fmt.pct(p.coverage_pct ?? null)} · ${fmt.int(p.accepted)}/${fmt.int(p.expected ?? null)} hộ${p.drafted ? " · phác thảo" : ""}`;
    tooltip.style.left = `${event.point.x + 14}px`;
    tooltip.style.top = `${event.point.y + 10}px`;
    tooltip.style.display = "block";
  });
  map.on("click", (event) => {
    const [point] = map.queryRenderedFeatures(event.point, { layers: ["households-points"] });
    if (point) {
      showHousehold(map, point, event.lngLat).catch(showError);
      return;
    }
    const [unit] = map.queryRenderedFeatures(event.point, { layers: ["units-fill"] });
    if (unit) select(map, unit.properties.code).catch(showError);
  });
  map.on("idle", () => (window.mapIdle = true));
  map.on("movestart", () => (window.mapIdle = false));
  map.on("error", (event) => {
    if (event.error && event.error.status === 401) toast("Token hết hiệu lực: hãy đăng nhập lại.", "error");
  });
}

function wireTable(map) {
  for (const th of document.querySelectorAll("#units th")) {
    th.addEventListener("click", () => {
      const key = th.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      renderTable(map);
    });
  }
}

function showError(exc) {
  toast(exc.message || String(exc), "error");
}

async function main() {
  await login();
  const map = createMap();
  wireMap(map);
  wireTable(map);
  window.diachiso.select = (code) => select(map, code);
  const roots = (await api("/api/v1/coverage")).items;
  if (!roots.length) {
    document.getElementById("summary").replaceChildren(el("div", { class: "empty" }, "Chưa nhập ranh giới hành chính nào."));
    return;
  }
  await new Promise((resolve) => (map.loaded() ? resolve() : map.once("load", resolve)));
  await select(map, roots[0].code);
  window.diachisoReady = true;
}

main().catch(showError);
