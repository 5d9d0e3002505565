"use strict";
// The buyer's page: sign in, wait for the opening, stand in the line, buy, watch the purchase.
// It speaks the public API of docs/DESIGN.md and keeps what it holds (session, queue token,
// purchase) in localStorage, so a reload resumes where the buyer was.
(() => {
  const $ = (id) => document.getElementById(id);
  const eventId = decodeURIComponent(location.pathname.split("/")[2] || "");
  const LINE_POLL_MS = 2000;
  const PURCHASE_POLL_MS = 1000;
  const BUSY_RETRY_MS = 2000;
  const REASONS = {
    sold_out: "Sold out: every ticket was sold before your request was decided.",
    limit_exceeded: "This would take you over the limit of tickets per buyer.",
    failed: "The purchase could not be completed.",
  };

  // Server clock minus local clock: the countdown and the line follow the server's time even
  // on a phone whose clock is wrong. The Date header has whole seconds, so only a skew of more
  // than two seconds is taken.
  let skew = 0;
  const now = () => Date.now() + skew;

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    // Busy or unreachable: worth asking again. Too many wrong codes is the buyer's to mend.
    get retryable() {
      return (
        this.status === 0 ||
        this.status >= 500 ||
        (this.status === 429 && this.code !== "too_many_attempts")
      );
    }
  }

  async function api(method, path, { body, session, idempotencyKey } = {}) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (session) headers.Authorization = "Bearer " + session.token;
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "unreachable", "The ticket service cannot be reached.");
    }
    const date = Date.parse(resp.headers.get("Date") || "");
    if (!Number.isNaN(date) && Math.abs(date - Date.now() - skew) > 2000) {
      skew = date - Date.now();
    }
    let json = null;
    try {
      json = await resp.json();
    } catch (e) {
      json = null;
    }
    if (!resp.ok) {
      throw new ApiError(
        resp.status,
        (json && json.error) || "http_" + resp.status,
        (json && json.message) || resp.statusText || "HTTP " + resp.status,
      );
    }
    return json;
  }

  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const jitter = (ms) => ms + Math.floor(Math.random() * ms * 0.25);

  // --- What the page keeps ---------------------------------------------------------------
  const keep = {
    get(name) {
      try {
        return JSON.parse(localStorage.getItem("ticketrush." + name) || "null");
      } catch (e) {
        return null;
      }
    },
    set(name, value) {
      try {
        if (value === null) localStorage.removeItem("ticketrush." + name);
        else localStorage.setItem("ticketrush." + name, JSON.stringify(value));
      } catch (e) {
        // Private browsing without storage: the page still works, a reload starts over.
      }
    },
  };
  const lineKey = "line." + eventId;
  const purchaseKey = "purchase." + eventId;

  // --- Showing ---------------------------------------------------------------------------
  function show(step, status) {
    document.body.dataset.step = step;
    for (const section of document.querySelectorAll("main > section")) {
      section.hidden = section.id !== "step-" + step;
    }
    if (status !== undefined) $("status").textContent = status;
  }
  function problem(text) {
    $("problem").hidden = !text;
    $("problem").textContent = text || "";
  }
  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const parts = [];
    if (h) parts.push(h + " h");
    if (h || m) parts.push(m + " min");
    parts.push((s % 60) + " s");
    return parts.join(" ");
  }
  const localTime = (ms) =>
    new Date(ms - skew).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
  const plural = (n, one, many) => n + " " + (n === 1 ? one : many);

  // Retries what a busy or unreachable service refused; anything else is the caller's.
  async function patiently(what) {
    for (;;) {
      try {
        const result = await what();
        problem(null);
        return result;
      } catch (e) {
        if (!(e instanceof ApiError) || !e.retryable) throw e;
        problem(e.message + " Trying again…");
        await sleep(jitter(BUSY_RETRY_MS));
      }
    }
  }

  // --- Signing in --------------------------------------------------------------------------
  function currentSession() {
    const s = keep.get("session");
    return s && s.expires_at > now() + 60000 ? s : null;
  }

  function signIn() {
    show("login", "Sign in with your e-mail address to buy.");
    $("email-form").hidden = false;
    $("code-form").hidden = true;
    return new Promise((resolve) => {
      let login = null;
      $("email-form").onsubmit = async (ev) => {
        ev.preventDefault();
        const button = ev.submitter || $("email-form").querySelector("button");
        button.disabled = true;
        try {
          const started = await patiently(() =>
            api("POST", "/login", { body: { email: $("email").value } }),
          );
          login = started.login;
          $("code-form").hidden = false;
          $("status").textContent = "We sent a code to " + $("email").value + ".";
          $("code").focus();
        } catch (e) {
          problem(e.message);
        } finally {
          button.disabled = false;
        }
      };
      $("code-form").onsubmit = async (ev) => {
        ev.preventDefault();
        const button = $("code-form").querySelector("button");
        button.disabled = true;
        try {
          const s = await patiently(() =>
            api("POST", "/sessions", { body: { login, code: $("code").value.trim() } }),
          );
          const session = { token: s.session, expires_at: Date.parse(s.expires_at) };
          keep.set("session", session);
          problem(null);
          resolve(session);
        } catch (e) {
          problem(e.message);
          // The login is spent: the e-mail form asks for a new code.
          if (e.code === "too_many_attempts" || e.code === "bad_login") {
            $("code-form").hidden = true;
          }
        } finally {
          button.disabled = false;
        }
      };
    });
  }

  // --- Proof of work -----------------------------------------------------------------------
  const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ]);
  const ror = (x, n) => (x >>> n) | (x << (32 - n));
  const w = new Uint32Array(64);

  // SHA-256 of bytes, as eight big-endian words (FIPS 180-4).
  function sha256(bytes) {
    const blocks = new Uint8Array((((bytes.length + 8) >> 6) + 1) << 6);
    blocks.set(bytes);
    blocks[bytes.length] = 0x80;
    const view = new DataView(blocks.buffer);
    view.setUint32(blocks.length - 8, Math.floor(bytes.length / 0x20000000));
    view.setUint32(blocks.length - 4, (bytes.length << 3) >>> 0);
    const h = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
      0x5be0cd19,
    ]);
    for (let off = 0; off < blocks.length; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
      for (let i = 16; i < 64; i++) {
        const x = w[i - 15];
        const y = w[i - 2];
        const s0 = ror(x, 7) ^ ror(x, 18) ^ (x >>> 3);
        const s1 = ror(y, 17) ^ ror(y, 19) ^ (y >>> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
      }
      let [a, b, c, d, e, f, g, k] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = (k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
        const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        k = g;
        g = f;
        f = e;
        e = (d + t1) | 0;
        d = c;
        c = b;
        b = a;
        a = (t1 + t2) | 0;
      }
      h[0] += a;
      h[1] += b;
      h[2] += c;
      h[3] += d;
      h[4] += e;
      h[5] += f;
      h[6] += g;
      h[7] += k;
    }
    return h;
  }

  function zeroBits(words) {
    let bits = 0;
    for (const word of words) {
      bits += Math.clz32(word);
      if (word !== 0) break;
    }
    return bits;
  }

  // The first n with SHA-256("challenge:n") starting with `bits` zero bits, found in slices
  // so that the page keeps answering.
  async function solve(challenge, bits) {
    const encoder = new TextEncoder();
    for (let n = 0; ; ) {
      const end = n + 5000;
      for (; n < end; n++) {
        if (zeroBits(sha256(encoder.encode(challenge + ":" + n))) >= bits) return n;
      }
      await sleep(0);
    }
  }

  // --- The line ----------------------------------------------------------------------------
  async function join(event, session) {
    let body = {};
    const bits = event.waiting_room.proof_of_work_bits;
    if (bits > 0) {
      $("status").textContent = "Checking this device before it joins the line…";
      const c = await patiently(() =>
        api("GET", "/events/" + eventId + "/line/challenge", { session }),
      );
      body = { challenge: c.challenge, solution: await solve(c.challenge, c.bits) };
    }
    const view = await patiently(() =>
      api("POST", "/events/" + eventId + "/line", { body, session }),
    );
    keep.set(lineKey, view.token);
    return view.token;
  }

  function showCountdown(opensAt, inLine) {
    $("pre-queue").hidden = !inLine;
    $("opens-at").textContent = "The sale opens " + localTime(opensAt) + ".";
    show("countdown", inLine ? "You are in the line. The sale has not opened yet." : "The sale has not opened yet.");
    const tick = () => {
      $("countdown").textContent = "Opens in " + duration((opensAt - now()) / 1000);
    };
    tick();
    return setInterval(tick, 1000);
  }

  // Waits until the opening, showing the countdown.
  async function countdown(opensAt, inLine) {
    const timer = showCountdown(opensAt, inLine);
    while (now() < opensAt) await sleep(Math.min(1000, opensAt - now()));
    clearInterval(timer);
  }

  // Watches the line until the visitor is admitted.
  async function stand(event, session, token) {
    for (;;) {
      const view = await patiently(() =>
        api("GET", "/events/" + eventId + "/line?token=" + encodeURIComponent(token)),
      );
      if (view.state === "admitted") return;
      if (view.state === "before_open") {
        const opensAt = Date.parse(view.opens_at);
        await countdown(opensAt, true);
        // Not everyone asks at the same millisecond.
        await sleep(Math.floor(Math.random() * LINE_POLL_MS));
        continue;
      }
      // The API counts places (and positions) from 0; people count from 1.
      $("place").textContent = (view.place + 1).toLocaleString();
      $("ahead").textContent = view.ahead.toLocaleString();
      $("wait").textContent = "about " + duration(view.estimated_wait_s);
      show("line", "You are in the line: " + plural(view.ahead, "person", "people") + " ahead of you.");
      await sleep(jitter(Math.min(LINE_POLL_MS, Math.max(250, view.estimated_wait_s * 500))));
    }
  }

  async function permitFor(session, token) {
    const p = await patiently(() =>
      api("POST", "/events/" + eventId + "/permits", { body: { token }, session }),
    );
    return { token: p.permit, expires_at: Date.parse(p.expires_at) };
  }

  // --- Buying ------------------------------------------------------------------------------
  function randomKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Refusals that end or restart the visit: a permit past its time is exchanged again (the
  // place stays admitted).
  const VISIT_ERRORS = new Set(["permit_expired", "bad_permit", "sale_closed", "bad_session"]);

  // Shows the purchase form; resolves with the accepted purchase's id.
  function buy(event, session, permit) {
    const most = Math.min(event.max_per_buyer, event.remaining);
    const select = $("quantity");
    select.textContent = "";
    for (let n = 1; n <= most; n++) select.add(new Option(String(n), String(n)));
    $("permit-until").textContent = permit
      ? "Your turn lasts until " + new Date(permit.expires_at - skew).toLocaleTimeString() + "."
      : "";
    show("buy", "It is your turn: choose your tickets.");
    return new Promise((resolve, reject) => {
      // One key a click, kept across retries of that click.
      $("buy-form").onsubmit = async (ev) => {
        ev.preventDefault();
        $("buy").disabled = true;
        const idempotencyKey = randomKey();
        try {
          const body = { quantity: Number(select.value) };
          if (permit) body.permit = permit.token;
          const accepted = await patiently(() =>
            api("POST", "/events/" + eventId + "/purchases", { body, session, idempotencyKey }),
          );
          keep.set(purchaseKey, accepted.purchase_id);
          resolve(accepted.purchase_id);
        } catch (e) {
          if (VISIT_ERRORS.has(e.code)) {
            reject(e);
            return;
          }
          problem(e.message);
          $("buy").disabled = false;
        }
      };
    });
  }

  async function watch(purchaseId) {
    $("purchase-title").textContent = "Your purchase";
    for (;;) {
      let p = null;
      try {
        p = await patiently(() => api("GET", "/purchases/" + encodeURIComponent(purchaseId)));
      } catch (e) {
        // Not yet recorded: the worker's decision will record it.
        if (e.code !== "purchase_not_found") throw e;
      }
      if (p && p.status === "confirmed") {
        $("purchase-result").textContent = "Confirmed: " + plural(p.quantity, "ticket", "tickets");
        $("purchase-detail").textContent = "Purchase " + p.purchase_id + ".";
        show("purchase", "Your purchase is confirmed.");
        document.body.dataset.step = "confirmed";
        return;
      }
      if (p && p.status === "rejected") {
        $("purchase-result").textContent = "Not sold";
        $("purchase-detail").textContent = REASONS[p.reason] || "Refused: " + p.reason + ".";
        show("purchase", "Your purchase was refused.");
        document.body.dataset.step = "rejected";
        return;
      }
      $("purchase-result").textContent = "Pending";
      $("purchase-detail").textContent = p
        ? "Received, number " + (p.position + 1).toLocaleString() + " in the sale's queue. Waiting for the decision…"
        : "Received. Waiting for the decision…";
      show("purchase", "Your purchase is pending.");
      await sleep(jitter(PURCHASE_POLL_MS));
    }
  }

  function ended(title, detail) {
    $("ended-title").textContent = title;
    $("ended-detail").textContent = detail;
    show("ended", title);
  }

  // --- The whole visit ---------------------------------------------------------------------
  async function visit() {
    if (!/^[0-9]+$/.test(eventId)) {
      ended("No such event", "This address names no event.");
      return;
    }
    const purchase = keep.get(purchaseKey);
    if (purchase) return watch(purchase);
    let event = await patiently(() => api("GET", "/events/" + eventId));
    $("event-name").textContent = event.name;
    document.title = event.name + " · Tickets";
    $("event-facts").textContent =
      plural(event.tickets, "ticket", "tickets") + ", at most " + event.max_per_buyer + " per buyer.";
    if (event.closes_at && Date.parse(event.closes_at) <= now()) {
      return ended("The sale has closed", "It closed " + localTime(Date.parse(event.closes_at)) + ".");
    }
    if (event.remaining === 0) return ended("Sold out", "Every ticket has been sold.");
    const session = currentSession() || (await signIn());
    const opensAt = event.opens_at ? Date.parse(event.opens_at) : 0;
    let permit = null;
    if (event.waiting_room) {
      const token = keep.get(lineKey) || (await join(event, session));
      await stand(event, session, token);
      permit = await permitFor(session, token);
      event = await patiently(() => api("GET", "/events/" + eventId));
      if (event.remaining === 0) return ended("Sold out", "Every ticket was sold before your turn.");
    } else if (opensAt > now()) {
      await countdown(opensAt, false);
    }
    return watch(await buy(event, session, permit));
  }

  // A credential the service no longer takes: forget it and start the visit again.
  const FORGET = {
    bad_session: "session",
    session_expired: "session",
    bad_queue_token: lineKey,
    not_yours: lineKey,
  };

  async function run() {
    for (;;) {
      try {
        await visit();
        return;
      } catch (e) {
        const forget = e instanceof ApiError && (e.status === 401 ? "session" : FORGET[e.code]);
        if (forget) {
          keep.set(forget, null);
          continue;
        }
        if (e instanceof ApiError && (e.code === "permit_expired" || e.code === "bad_permit")) {
          continue;
        }
        if (e instanceof ApiError && e.code === "sale_closed") {
          return ended("The sale has closed", e.message);
        }
        problem(e.message);
        show(document.body.dataset.step, "Something went wrong. Reload the page to try again.");
        return;
      }
    }
  }

  run();
})();
