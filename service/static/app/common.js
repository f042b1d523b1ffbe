// Shared by the pages: the token (session storage), API calls, login, DOM and formatting helpers.
// The pages are clients of the public API only: every decision is the API's.

const TOKEN_KEY = "diachiso.token";
export const PAGE_ROLES = ["reviewer", "admin"];

export const STATUS_LABELS = {
  accepted: "Đã chấp nhận",
  flagged: "Cần xem lại",
  rejected: "Bị từ chối",
  merged: "Đã gộp",
  retired: "Đã hủy",
};
export const LEVEL_LABELS = {
  province: "Tỉnh",
  district: "Huyện",
  commune: "Xã/phường",
  hamlet: "Ấp/khóm",
};

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Call the API with the stored token; a problem+json answer becomes an ApiError. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${token() || ""}`, Accept: "application/json" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = (data && data.detail) || `Lỗi ${response.status}`;
    throw new ApiError(response.status, (data && data.code) || `http_${response.status}`, detail);
  }
  return data;
}

/** Headers that MapLibre adds to its requests for tiles of this service. */
export function authorise(url) {
  if (url.startsWith(`${location.origin}/api/`)) {
    return { url, headers: { Authorization: `Bearer ${token() || ""}` } };
  }
  return { url };
}

/** Build an element: el("td", {class: "x", dataset: {code}}, "text", child). Text is never HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const fmt = {
  int: (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("vi-VN")),
  pct: (p) =>
    p === null || p === undefined
      ? "—"
      : `${Number(p).toLocaleString("vi-VN", { maximumFractionDigits: 1 })} %`,
  dateTime: (iso) =>
    iso
      ? new Date(iso).toLocaleString("vi-VN", {
          timeZone: "Asia/Ho_Chi_Minh",
          day: "2-digit",
          month: "2-digit",
          year: "numeric",
          hour: "2-digit",
          minute: "2-digit",
        })
      : "—",
  day: (isoDate) => {
    const [, m, d] = isoDate.split("-");
    return `${d}/${m}`;
  },
  metres: (m) =>
    m === null || m === undefined
      ? "—"
      : `${Number(m).toLocaleString("vi-VN", { maximumFractionDigits: 1 })} m`,
};

// The login dialog and the message box, the same on every page.
document.body.append(
  el("dialog", { id: "login" },
    el("form", { method: "dialog" },
      el("h2", {}, "Đăng nhập"),
      el("p", {},
        "Dán token do quản trị viên cấp (dạng ", el("code", {}, "dcs_…"),
        "). Token chỉ được giữ trong phiên làm việc của trình duyệt này."),
      el("input", { name: "token", autocomplete: "off", spellcheck: "false", placeholder: "dcs_…", required: true, "aria-label": "Token" }),
      el("div", { class: "error", role: "alert" }),
      el("div", { class: "row" }, el("button", { class: "btn brand", type: "submit" }, "Vào trang")),
    ),
  ),
  el("div", { id: "toast", role: "status" }),
);

let toastTimer = null;
export function toast(message, kind = "") {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = kind;
  box.style.display = "block";
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.style.display = "none"), 5000);
}

function roleMessage(me) {
  return (
    `Tài khoản “${me.name}” có vai trò “${me.role}”: trang này chỉ dành cho ` +
    "cán bộ kiểm duyệt (reviewer) và quản trị viên (admin)."
  );
}

/** Ask for a token until one of a page role is given; resolves with /me. */
export async function login() {
  const dialog = document.getElementById("login");
  const input = dialog.querySelector("input");
  const error = dialog.querySelector(".error");
  if (token()) {
    try {
      const me = await api("/api/v1/me");
      if (PAGE_ROLES.includes(me.role)) return showUser(me);
      error.textContent = roleMessage(me);
    } catch (exc) {
      error.textContent = exc.status === 401 ? "Token đã hết hiệu lực hoặc bị thu hồi." : exc.message;
    }
    sessionStorage.removeItem(TOKEN_KEY);
  }
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.querySelector("form").addEventListener("submit", async (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      try {
        const me = await api("/api/v1/me");
        if (!PAGE_ROLES.includes(me.role)) throw new ApiError(403, "forbidden", roleMessage(me));
        dialog.close();
        resolve(showUser(me));
      } catch (exc) {
        sessionStorage.removeItem(TOKEN_KEY);
        error.textContent = exc.status === 401 ? "Token không đúng hoặc đã bị thu hồi." : exc.message;
      }
    });
  });
}

function showUser(me) {
  document.getElementById("user-name").replaceChildren(me.name, " ", el("span", { class: "role" }, me.role));
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  return me;
}
