// The ODK Collect set-up page. An admin picks a surveyor and issues a new token in a settings
// QR code (tokens are stored hashed, so a code can only be made when a token is issued); a
// surveyor gets the QR code of the token they hold. Everything goes through the public API.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("diachiso.collect.token");

  const api = (path, options = {}) =>
    fetch(path, { ...options, cache: "no-store", headers: { Authorization: `Bearer ${token}` } });

  async function problem(response) {
    try {
      return (await response.json()).detail || `Lỗi ${response.status}`;
    } catch (error) {
      return `Lỗi ${response.status}`;
    }
  }

  async function surveyors() {
    const found = [];
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: "1000", ...(cursor ? { cursor } : {}) });
      const response = await api(`/api/v1/users?${query}`);
      if (!response.ok) throw new Error(await problem(response));
      const page = await response.json();
      found.push(...page.items.filter((u) => u.role === "surveyor" && !u.revoked_at));
      cursor = page.next_cursor;
    } while (cursor);
    return found.sort((a, b) => `${a.team} ${a.name}`.localeCompare(`${b.team} ${b.name}`, "vi"));
  }

  async function start() {
    $("error").textContent = "";
    const response = await api("/api/v1/me");
    if (!response.ok) {
      $("login-error").textContent = await problem(response);
      return;
    }
    const me = await response.json();
    sessionStorage.setItem("diachiso.collect.token", token);
    $("login").hidden = true;
    if (me.role === "admin") {
      const options = (await surveyors()).map((u) => new Option(`${u.team} – ${u.name} (#${u.id})`, u.id));
      $("surveyor").replaceChildren(...options);
      $("admin").hidden = false;
    } else if (me.role === "surveyor") {
      $("self").hidden = false;
    } else {
      $("error").textContent = "Chỉ quản trị viên hoặc người thu thập dùng được trang này.";
    }
  }

  function show(settings) {
    $("result-title").textContent = `${settings.name} · ${settings.team || ""}`;
    $("qr").src = settings.qr_svg;
    $("secret").textContent = settings.token;
    $("result").hidden = false;
  }

  async function fetchSettings(path, method) {
    $("error").textContent = "";
    const response = await api(path, { method });
    if (!response.ok) {
      $("error").textContent = await problem(response);
      return;
    }
    show(await response.json());
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    start().catch((error) => ($("error").textContent = String(error.message || error)));
  });
  $("issue").addEventListener("click", () => {
    const option = $("surveyor").selectedOptions[0];
    if (!option) return;
    if (!confirm(`Cấp token mới cho ${option.text}? Token cũ sẽ ngừng hoạt động.`)) return;
    fetchSettings(`/api/v1/users/${option.value}/collect-settings`, "POST");
  });
  $("mine").addEventListener("click", () => fetchSettings("/api/v1/me/collect-settings", "GET"));
  if (token) start().catch(() => ($("login").hidden = false));
})();
