//! The buyer's page, `GET /e/{id}`: what it is served with, and buyers walking it in a real
//! browser. Headless Chromium, driven through chromedriver (WebDriver), signs in with a code,
//! waits out the countdown in the pre-queue, watches its place in the line (across a reload),
//! is admitted, buys, and sees the purchase confirmed; another loses the last ticket to a
//! rival queued first and sees its purchase pending, then refused with the reason. Each
//! step's text is checked.
//!
//! The browser is Debian's `chromium` and `chromium-driver` (`.ci/run` installs them; paths in
//! `TICKET_TEST_CHROMIUM` and `TICKET_TEST_CHROMEDRIVER` override `/usr/bin`). Where they are
//! missing the browser test says so and passes, unless `TICKET_TEST_BROWSER=required` (as
//! `.ci/run` sets it), where it fails. `TICKET_TEST_SCREENSHOTS=DIR` saves each step's
//! screenshot in DIR.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use http::{Method, StatusCode, header};
use hyper_util::client::legacy::connect::HttpConnector;
use plumbing::testing::{free_port, wait_until};
use serde_json::{Value, json};
use ticket_svc::access::{KeyRing, unix_now};
use ticket_svc::domain::{EventId, UnixMillis};
use ticket_svc::http::ApiConfig;
use ticket_svc::line::proof::solve;
use ticket_svc::line::{LineOrder, QueueTicket};
use ticket_svc::queue::MemoryQueueConfig;
use ticket_svc::store::Store;
use ticket_svc::testing::{
    Outbox, TEST_ORGANIZER_TOKEN, TEST_SIGNING_KEY, TestApi, access_with, buy, buyer_id_of, call,
    create_event, get, organizer, post_json_as, session_of, start_api, start_api_with, test_deps,
};

/// A phone's viewport: the page must fit it without sideways scrolling.
const PHONE: (u32, u32) = (390, 844);

/// Headless Chromium under a chromedriver of the test's own. Dropping it ends both: the driver
/// runs in a process group of its own, and the browser it starts is in that group.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

fn program(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

impl Browser {
    /// The browser, or `None` (said on stderr) where Chromium is not installed and the test
    /// may pass without it.
    async fn start() -> Option<Self> {
        let chromium = program("TICKET_TEST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("TICKET_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        if !chromium.exists() || !chromedriver.exists() {
            let missing = format!(
                "{} or {} is missing: install Debian's chromium and chromium-driver",
                chromium.display(),
                chromedriver.display()
            );
            assert!(
                std::env::var("TICKET_TEST_BROWSER").as_deref() != Ok("required"),
                "TICKET_TEST_BROWSER=required, but {missing}"
            );
            eprintln!("skipping the browser test: {missing}");
            return None;
        }
        let port = free_port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts")
        };
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self {
            driver,
            client: None,
            _profile: profile,
        };
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // No sandbox (tests run as root); no traffic but to the page under test.
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--window-size={},{}", PHONE.0, PHONE.1),
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("chromedriver did not start Chromium within 20 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        browser.client = Some(client);
        Some(browser)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn js(&self, script: &str) -> Value {
        self.client().execute(script, vec![]).await.unwrap()
    }

    /// The page's step (`data-step` on its body).
    async fn step(&self) -> String {
        self.js("return document.body.dataset.step;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the page is at `step`; panics with what it shows if it is not within `limit`.
    async fn wait_for_step(&self, step: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.step().await == step {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the page did not reach {step:?} within {limit:?}; it is at {:?} showing:\n{}",
                    self.step().await,
                    self.shown("body").await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text an element shows (empty when hidden), by id (or `body`).
    async fn shown(&self, id: &str) -> String {
        let locator = if id == "body" {
            Locator::Css("body")
        } else {
            Locator::Id(id)
        };
        self.client()
            .find(locator)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn type_into(&self, id: &str, text: &str) {
        let field = self.client().find(Locator::Id(id)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Checks what holds on every step: the page fits a phone's width, and everything it
    /// loaded came from its own origin. Where `TICKET_TEST_SCREENSHOTS` names a folder, the
    /// step's screenshot goes there (`STEP.png`), for a person to look at.
    async fn check_view(&self) {
        if let Some(dir) = std::env::var_os("TICKET_TEST_SCREENSHOTS") {
            let png = self.client().screenshot().await.unwrap();
            let path = PathBuf::from(dir).join(format!("{}.png", self.step().await));
            std::fs::write(path, png).unwrap();
        }
        let fits = self
            .js("return document.documentElement.scrollWidth <= window.innerWidth;")
            .await;
        assert_eq!(fits, json!(true), "the page scrolls sideways on a phone");
        let foreign = self
            .js("return performance.getEntriesByType('resource')
                   .map((e) => e.name)
                   .filter((url) => new URL(url).origin !== location.origin);")
            .await;
        assert_eq!(
            foreign,
            json!([]),
            "the page loaded something from elsewhere"
        );
    }

    /// Asks the page's login for a code for `email`: the code `outbox` received, once the
    /// page shows its code form.
    async fn ask_code(&self, outbox: &Outbox, email: &str) -> String {
        self.type_into("email", email).await;
        self.click("#email-form button").await;
        let mut code = None;
        wait_until(
            "the page's login sent a code",
            Duration::from_secs(10),
            async || {
                code = outbox.last_code_for(email);
                code.is_some()
            },
        )
        .await;
        wait_until("the code form shows", Duration::from_secs(10), async || {
            self.shown("code-form")
                .await
                .contains("The code we sent you")
        })
        .await;
        code.unwrap()
    }

    /// Signs the page in as `email`, with the code `outbox` received.
    async fn sign_in(&self, outbox: &Outbox, email: &str) {
        self.wait_for_step("login", Duration::from_secs(10)).await;
        let code = self.ask_code(outbox, email).await;
        self.type_into("code", &code).await;
        self.click("#code-form button").await;
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            client.close().await.unwrap();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_child(&self.driver);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = self.driver.wait();
    }
}

/// Joins `name@test.example` to `event`'s line through the API, proof of work included; the
/// queue token.
async fn join_line(api: &TestApi, event: i64, name: &str) -> String {
    let session = session_of(name);
    let line = format!("/events/{event}/line");
    let c = call(
        api.addr,
        Method::GET,
        &format!("{line}/challenge"),
        &[("authorization", &session)],
        "",
    )
    .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    let challenge = c.json["challenge"].as_str().unwrap().to_owned();
    let bits = u8::try_from(c.json["bits"].as_u64().unwrap()).unwrap();
    let solution = solve(&challenge, bits);
    let r = post_json_as(
        api.addr,
        &line,
        &session,
        json!({"challenge": challenge, "solution": solution}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.text);
    r.json["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_walks_the_page_from_the_countdown_to_a_confirmed_purchase() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let deps = test_deps(MemoryQueueConfig::default()).await;
    let outbox = Outbox::default();
    let api = start_api_with(
        &deps,
        ApiConfig::default(),
        access_with(&outbox, &[TEST_ORGANIZER_TOKEN]),
    )
    .await;
    let worker = deps.start_worker();

    // The sale opens in 15 s (time for the browser to sign in and join before it), behind a
    // room admitting one visitor a second that asks a proof of work.
    let opens_at = UnixMillis(UnixMillis::now().0 + 15_000);
    let r = post_json_as(
        api.addr,
        "/events",
        &organizer(),
        json!({
            "name": "DJ night", "tickets": 10, "max_per_buyer": 3,
            "opens_at": opens_at.to_string(),
            "waiting_room": {"admit_per_s": 1, "proof_of_work_bits": 8}
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let event = r.json["id"].as_i64().unwrap();

    // Eight fans join the pre-queue through the API. The browser signs in as the one the
    // opening's shuffle puts fifth (place 4, admitted 5 s after the opening): joining again,
    // that visitor keeps the place (joins are one per visitor).
    let keys = KeyRing::parse(&[TEST_SIGNING_KEY]).unwrap();
    let mut seqs = Vec::new();
    for i in 0..8 {
        let name = format!("fan{i}");
        let token = join_line(&api, event, &name).await;
        let seq = QueueTicket::open(&keys, &token, EventId(event), unix_now())
            .unwrap()
            .seq;
        seqs.push((name, seq));
    }
    let seed = deps
        .store
        .event(EventId(event))
        .await
        .unwrap()
        .unwrap()
        .waiting_room
        .unwrap()
        .seed;
    let order = LineOrder::new(&seed, 8);
    let (name, _) = seqs
        .iter()
        .find(|(_, seq)| order.place(*seq) == Some(4))
        .unwrap();
    let email = format!("{name}@test.example");

    // Signing in.
    let page = format!("http://{}/e/{event}", api.addr);
    browser.client().goto(&page).await.unwrap();
    browser
        .wait_for_step("login", Duration::from_secs(10))
        .await;
    assert_eq!(browser.shown("event-name").await, "DJ night");
    assert_eq!(
        browser.shown("event-facts").await,
        "10 tickets, at most 3 per buyer."
    );
    assert!(browser.shown("step-login").await.contains("Sign in to buy"));
    assert_eq!(browser.shown("code-form").await, "", "no code asked yet");
    browser.check_view().await;
    let code = browser.ask_code(&outbox, &email).await;
    assert_eq!(
        browser.shown("status").await,
        format!("We sent a code to {email}.")
    );
    // A wrong code is refused on the page, by name.
    let wrong = if code.starts_with('0') {
        "11111111"
    } else {
        "00000000"
    };
    browser.type_into("code", wrong).await;
    browser.click("#code-form button").await;
    wait_until(
        "the wrong code is refused",
        Duration::from_secs(10),
        async || browser.shown("problem").await.contains("not the one sent"),
    )
    .await;
    browser.type_into("code", &code).await;
    browser.click("#code-form button").await;

    // The countdown, in the pre-queue (the page solved the proof of work and joined).
    browser
        .wait_for_step("countdown", Duration::from_secs(10))
        .await;
    assert!(
        UnixMillis::now() < opens_at,
        "the test machine took too long: the page signed in after the opening"
    );
    let countdown = browser.shown("countdown").await;
    assert!(countdown.starts_with("Opens in "), "{countdown}");
    assert!(countdown.ends_with(" s"), "{countdown}");
    assert!(
        browser
            .shown("pre-queue")
            .await
            .contains("put in a random order"),
    );
    assert_eq!(
        browser.shown("status").await,
        "You are in the line. The sale has not opened yet."
    );
    assert_eq!(browser.shown("problem").await, "", "the problem is gone");
    browser.check_view().await;

    // The line: fifth place, the people ahead counting down, a wait estimated at 1/s.
    browser.wait_for_step("line", Duration::from_secs(25)).await;
    assert_eq!(browser.shown("place").await, "5");
    let ahead: u64 = browser.shown("ahead").await.parse().unwrap();
    assert!((1..=4).contains(&ahead), "{ahead} ahead");
    let wait = browser.shown("wait").await;
    assert!(wait.starts_with("about ") && wait.ends_with(" s"), "{wait}");
    assert!(browser.shown("status").await.ends_with("ahead of you."));
    browser.check_view().await;
    // A reload keeps the place.
    browser.client().refresh().await.unwrap();
    browser.wait_for_step("line", Duration::from_secs(10)).await;
    assert_eq!(browser.shown("place").await, "5");

    // Admitted: the purchase form, up to the limit.
    browser.wait_for_step("buy", Duration::from_secs(15)).await;
    assert!(UnixMillis::now().0 >= opens_at.0 + 4_000, "admitted early");
    assert_eq!(
        browser.shown("status").await,
        "It is your turn: choose your tickets."
    );
    assert!(
        browser
            .shown("permit-until")
            .await
            .starts_with("Your turn lasts until ")
    );
    let options = browser
        .js("return Array.from(document.getElementById('quantity').options, (o) => o.value);")
        .await;
    assert_eq!(options, json!(["1", "2", "3"]));
    browser
        .client()
        .find(Locator::Id("quantity"))
        .await
        .unwrap()
        .select_by_value("2")
        .await
        .unwrap();
    browser.check_view().await;
    browser.click("#buy").await;

    // The purchase: pending, then confirmed by the worker.
    browser
        .wait_for_step("confirmed", Duration::from_secs(10))
        .await;
    assert_eq!(
        browser.shown("purchase-result").await,
        "Confirmed: 2 tickets"
    );
    assert_eq!(browser.shown("status").await, "Your purchase is confirmed.");
    let detail = browser.shown("purchase-detail").await;
    let id = detail
        .strip_prefix("Purchase ")
        .and_then(|d| d.strip_suffix('.'))
        .unwrap();
    let p = get(api.addr, &format!("/purchases/{id}")).await;
    assert_eq!(p.json["status"], "confirmed", "{}", p.text);
    assert_eq!(p.json["buyer"], buyer_id_of(name));
    assert_eq!(p.json["quantity"], 2);
    assert_eq!(
        get(api.addr, &format!("/events/{event}")).await.json["sold"],
        2
    );
    browser.check_view().await;

    browser.close().await;
    worker.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_that_loses_the_last_ticket_shows_pending_then_the_reason() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let deps = test_deps(MemoryQueueConfig::default()).await;
    let outbox = Outbox::default();
    let api = start_api_with(
        &deps,
        ApiConfig::default(),
        access_with(&outbox, &[TEST_ORGANIZER_TOKEN]),
    )
    .await;
    // One ticket, on sale at once, no waiting room; no worker yet, so purchases wait queued.
    let event = create_event(api.addr, 1, 1).await;
    browser
        .client()
        .goto(&format!("http://{}/e/{event}", api.addr))
        .await
        .unwrap();
    browser.sign_in(&outbox, "late@test.example").await;
    browser.wait_for_step("buy", Duration::from_secs(10)).await;
    assert_eq!(
        browser
            .js("return document.getElementById('quantity').options.length;")
            .await,
        json!(1)
    );

    // A rival's purchase is queued first; the page's comes second, and shows so.
    let rival = buy(api.addr, event, "rival", 1, None).await;
    assert_eq!(rival.status, StatusCode::ACCEPTED, "{}", rival.text);
    browser.click("#buy").await;
    wait_until(
        "the page shows its place",
        Duration::from_secs(10),
        async || {
            browser
                .shown("purchase-detail")
                .await
                .starts_with("Received, number 2 ")
        },
    )
    .await;
    assert_eq!(browser.step().await, "purchase");
    assert_eq!(browser.shown("purchase-result").await, "Pending");
    assert_eq!(browser.shown("status").await, "Your purchase is pending.");
    browser.check_view().await;

    // The worker sells the ticket to the rival: the page turns to the refusal, in words.
    let worker = deps.start_worker();
    browser
        .wait_for_step("rejected", Duration::from_secs(10))
        .await;
    assert_eq!(browser.shown("purchase-result").await, "Not sold");
    assert_eq!(
        browser.shown("purchase-detail").await,
        "Sold out: every ticket was sold before your request was decided."
    );
    assert_eq!(browser.shown("status").await, "Your purchase was refused.");
    browser.check_view().await;

    // A visit after the sale says it is over before asking anyone to sign in.
    browser.js("localStorage.clear(); return null;").await;
    browser.client().refresh().await.unwrap();
    browser
        .wait_for_step("ended", Duration::from_secs(10))
        .await;
    assert_eq!(browser.shown("ended-title").await, "Sold out");
    browser.close().await;
    worker.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn the_page_is_served_whole_with_its_policy_and_revalidates() {
    let deps = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&deps, ApiConfig::default()).await;

    // The same page for any event id, read without a store; the script finds the event.
    let page = get(api.addr, "/e/12345").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(page.text.starts_with("<!doctype html>"));
    assert!(page.text.contains("<script>\"use strict\";"));
    let policy = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"));
    assert!(policy.contains("connect-src 'self'"));
    assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(page.headers[header::REFERRER_POLICY], "no-referrer");

    // A browser that has it asks again and gets 304.
    let etag = page.headers[header::ETAG].to_str().unwrap();
    let again = call(
        api.addr,
        Method::GET,
        "/e/12345",
        &[("if-none-match", etag)],
        "",
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.text.is_empty());
    let other = call(
        api.addr,
        Method::GET,
        "/e/1",
        &[("if-none-match", "\"old\"")],
        "",
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);

    // Not an event id: 404, as for the API's routes.
    let r = get(api.addr, "/e/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"], "event_not_found");
    api.stop().await;
}
