"""The web console at /ui in a real browser: Debian's chromium, driven by Selenium through
chromium-driver, against the session's Serve application; and its guards (cookie, origin,
grants, escaping) over plain HTTP. `CONSOLE_SCREENSHOTS=docs/console` saves each page as PNG."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from conftest import jpeg

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
REPORT = Path(__file__).resolve().parents[1] / "docs" / "loadtest" / "loadtest.json"
CAPTIONS = ["Congratulations, you won a free phone! Claim it now at the link below", "Send 1 BTC, get 2 back: official giveaway"]
HOSTILE = "<script>window.hacked = 1</script><img src=x onerror=window.hacked=1>"


def entry_ids(service, bank: str) -> list[str]:
    return [e["entry_id"] for e in service.ok("GET", f"/v1/banks/{bank}/entries")["entries"]]


@pytest.fixture(scope="module")
def banked(service, photos):
    """A bank of four photos (hostile markup in one's metadata) and a text; a bank of captions."""
    bank, captions = f"scam-ads-{uuid.uuid4().hex[:6]}", f"scam-captions-{uuid.uuid4().hex[:6]}"
    service.ok("POST", "/v1/banks", json={"name": bank, "description": "Known scam ad images, from partner reports", "labels": ["scam", "ads"]})
    for i, image in enumerate(photos[:4]):
        metadata = {"case": f"SC-{1001 + i}", "source": "partner report"} | ({"note": HOSTILE} if i == 3 else {})
        service.ok("POST", f"/v1/banks/{bank}/entries", files={"file": (f"p{i}.jpg", jpeg(image))}, data={"metadata": json.dumps(metadata)})
    service.ok("POST", f"/v1/banks/{bank}/entries", json={"text": "a caption the console deletes", "metadata": {"case": "SC-1005"}})
    service.ok("POST", "/v1/banks", json={"name": captions, "description": "Known scam captions", "labels": ["scam", "text"]})
    for i, text in enumerate(CAPTIONS):
        service.ok("POST", f"/v1/banks/{captions}/entries", json={"text": text, "metadata": {"case": f"SC-{2001 + i}"}})
    return bank, captions


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed (`make test` installs them where apt-get can, as root)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the [test] extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900", "--lang=en-US"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


class Console:
    """The browser on the console, with waits and screenshots."""

    def __init__(self, driver, url: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.url, self.By, self.Wait = driver, url, By, WebDriverWait
        self.shots = os.environ.get("CONSOLE_SCREENSHOTS")

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def find(self, css: str):
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def all(self, css: str) -> list:
        return self.driver.find_elements(self.By.CSS_SELECTOR, css)

    def wait(self, condition, timeout: float = 30, message: str = ""):
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        ignored = (NoSuchElementException, StaleElementReferenceException)  # the page is changing
        return self.Wait(self.driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(lambda d: condition(), message)

    def submit(self, css: str) -> None:
        """Submit a form and wait for the next page."""
        old = self.find("html")
        self.find(css).click()
        self.wait(lambda: old != self.find("html") and self.driver.execute_script("return document.readyState") == "complete")

    def screenshot(self, name: str) -> None:
        if not self.shots:
            return
        height, chrome = self.driver.execute_script("return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
        self.driver.set_window_size(1280, min(max(900, height), 2400) + chrome)
        os.makedirs(self.shots, exist_ok=True)
        self.driver.save_screenshot(os.path.join(self.shots, f"{name}.png"))
        self.driver.set_window_size(1280, 900)


def test_console_in_a_browser(service, banked, browser, photos, tmp_path):
    ui = Console(browser, service.url)
    (bank, captions), (first, second, _, fourth, text_entry) = banked, entry_ids(service, banked[0])
    earlier = service.ok("POST", "/v1/reindex", json={"signal_types": ["pdq"]})["job_id"]  # a version to roll back to, built meanwhile

    # a page load without a token shows the login form; a wrong token is refused there
    ui.open("/ui/banks")
    assert ui.find("form#login") and browser.title.startswith("Log in")
    ui.screenshot("login")
    ui.find("input[name=token]").send_keys("not-a-token")
    ui.submit("form#login button")
    assert "unknown token" in ui.find("#error").text
    ui.find("input[name=token]").send_keys(service.token("admin"))
    ui.submit("form#login button")
    assert browser.current_url.endswith("/ui/banks") and ui.find("#team").text == "admin"

    # banks with counts and states; user text is shown as text, never run
    row = ui.find(f"tr[data-bank='{bank}']")
    assert [td.text for td in row.find_elements(ui.By.CSS_SELECTOR, "td.num")] == ["5", "0"]  # entries, disabled
    assert "enabled" in row.text and "scam" in row.text and ui.find(f"tr[data-bank='{captions}']")
    ui.screenshot("banks")

    # a bank's entries, with thumbnails of the stored photos, decoded by the browser
    row.find_element(ui.By.LINK_TEXT, bank).click()
    ui.wait(lambda: len(ui.all("img.thumb")) == 4)
    ui.wait(lambda: all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) for img in ui.all("img.thumb")),
            message="thumbnails did not load")
    assert HOSTILE in ui.find(f"tr[data-entry='{fourth}'] pre.metadata").text  # shown as text, never run
    assert browser.execute_script("return window.hacked") is None

    # disable one entry, delete another (after the confirmation)
    ui.submit(f"tr[data-entry='{first}'] button.toggle")
    assert "disabled" in ui.find(f"tr[data-entry='{first}']").get_attribute("class")
    assert service.ok("GET", f"/v1/banks/{bank}/entries/{first}")["enabled"] is False
    ui.find(f"tr[data-entry='{text_entry}'] button.danger").click()
    browser.switch_to.alert.accept()
    ui.wait(lambda: not ui.all(f"tr[data-entry='{text_entry}']"))
    assert service.call("GET", f"/v1/banks/{bank}/entries/{text_entry}").status_code == 404
    ui.screenshot("bank")

    # try a match: an edited copy of a banked photo matches its entry; the disabled one matches nothing
    for name, image in (("copy.jpg", photos[1]), ("disabled.jpg", photos[0])):
        image.save(tmp_path / name, quality=50)  # re-encoded
    ui.open("/ui/match")
    ui.find("input[type=file]").send_keys(str(tmp_path / "copy.jpg"))
    ui.find(f"input[name=banks][value='{bank}']").click()
    ui.submit("form#match button[type=submit]")
    found = ui.all(f"#matches tr[data-entry='{second}']")  # one row per signal that matched
    assert found and "pdq" in {row.find_element(ui.By.CSS_SELECTOR, "code.signal").text for row in found}, ui.find("main").text
    match = found[0]
    ui.wait(lambda: all(browser.execute_script("return arguments[0].naturalWidth", img) for img in match.find_elements(ui.By.CSS_SELECTOR, "img.thumb")))
    assert len(match.find_elements(ui.By.CSS_SELECTOR, "img.thumb")) == 2  # the query beside the banked photo
    ui.screenshot("match")
    ui.find("input[type=file]").send_keys(str(tmp_path / "disabled.jpg"))
    ui.submit("form#match button[type=submit]")
    assert not ui.all(f"#matches tr[data-entry='{first}']")
    # and a text, typed: an edited caption matches its entry
    ui.open("/ui/match")
    ui.find("textarea[name=text]").send_keys(CAPTIONS[0].upper() + "!!")
    ui.submit("form#match button[type=submit]")
    caption = entry_ids(service, captions)[0]
    assert ui.all(f"#matches tr[data-entry='{caption}']"), ui.find("main").text

    # indexes: a reindex of pdq through the console, its progress followed live, then a rollback
    assert service.wait_job(earlier)["state"] == "succeeded"
    ui.open("/ui/indexes")
    assert ui.find("tr[data-signal='pdq']") and ui.find("tr[data-signal='text_exact']")
    ui.find("input[name=signal_types][value=pdq]").click()
    ui.submit("form#reindex button[type=submit]")
    assert "/ui/jobs/r_" in browser.current_url
    states, shot = set(), False

    def finished() -> bool:
        nonlocal shot
        state = ui.find("#job").get_attribute("data-state")
        if state == "running" and not shot and float(ui.find("#progress").get_attribute("value")) > 0:
            ui.screenshot("job")  # under way
            shot = True
        states.add(state)
        return state in ("succeeded", "failed")

    ui.wait(finished, timeout=240, message="the reindex did not finish")
    assert ui.find("#state").text == "succeeded", ui.find("#job-error").text
    assert states & {"pending", "running"}, states  # the page showed the job under way, then its end, with no reload
    assert float(ui.find("#progress").get_attribute("value")) == 1.0 and "pdq v" in ui.find("#versions").text
    if not shot:
        ui.screenshot("job")
    newest = ui.find("#versions").text.split()[1]
    service.wait_serving("pdq", newest)
    ui.open("/ui/indexes")
    versions = [r.get_attribute("data-version") for r in ui.all(".versions[data-signal=pdq] tr[data-version]")]
    assert versions[0] == newest and len(versions) >= 2 and ui.find(".versions[data-signal=pdq] tr[data-version] .state.on")
    ui.screenshot("indexes")
    older = versions[1]
    ui.find(f".versions[data-signal=pdq] tr[data-version='{older}'] button.rollback").click()
    browser.switch_to.alert.accept()
    ui.wait(lambda: ui.find("tr[data-signal=pdq]").text.split()[1] == older)
    assert service.ok("GET", "/v1/indexes")["pdq"]["version"] == older
    ui.find(f".versions[data-signal=pdq] tr[data-version='{newest}'] button.rollback").click()
    browser.switch_to.alert.accept()
    ui.wait(lambda: ui.find("tr[data-signal=pdq]").text.split()[1] == newest)
    service.wait_serving("pdq", newest)

    # the latest load-test report: its plot and its steps
    ui.open("/ui/loadtest")
    ui.wait(lambda: browser.execute_script("return document.getElementById('plot').naturalWidth") > 0, message="the plot did not load")
    assert len(ui.all("#steps tbody tr")) == len(json.loads(REPORT.read_text())["steps"])
    ui.screenshot("loadtest")

    # logging out forgets the token
    ui.submit("header form button")
    ui.open("/ui/banks")
    assert ui.find("form#login")


def login(service, team: str):
    import requests

    session = requests.Session()
    response = session.post(service.url + "/ui/login", data={"token": service.token(team), "next": "/ui/banks"},
                            headers={"Origin": service.url}, allow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/banks"
    return session, response


def test_console_guards(service, banked):
    """The cookie is HttpOnly, SameSite=Strict and for /ui only; forms from other sites are refused;
    grants hold as in the API."""
    bank, _ = banked
    entry = entry_ids(service, bank)[1]
    session, response = login(service, "admin")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert service.token("admin") not in response.text
    page = session.get(service.url + f"/ui/banks/{bank}")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert HOSTILE not in page.text and "&lt;script&gt;" in page.text  # escaped in the HTML itself

    # the API takes the header only: a cookie is not a credential there
    assert session.get(service.url + "/v1/banks", cookies={"mediamatch_token": service.token("admin")}).status_code == 401
    # the console takes the header too
    assert service.call("GET", "/ui/banks").status_code == 200

    # a state change from another site's page, or with no origin at all, is refused and changes nothing
    action = f"{service.url}/ui/banks/{bank}/entries/{entry}/enabled"
    for headers in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/page"}, {}):
        refused = session.post(action, data={"enabled": "false"}, headers=headers, allow_redirects=False)
        assert refused.status_code == 403 and "own pages" in refused.text
    assert service.ok("GET", f"/v1/banks/{bank}/entries/{entry}")["enabled"] is True
    done = session.post(action, data={"enabled": "false"}, headers={"Origin": service.url}, allow_redirects=False)
    assert done.status_code == 303 and service.ok("GET", f"/v1/banks/{bank}/entries/{entry}")["enabled"] is False
    session.post(action, data={"enabled": "true"}, headers={"Referer": service.url + "/ui/banks"}, allow_redirects=False)
    assert service.ok("GET", f"/v1/banks/{bank}/entries/{entry}")["enabled"] is True

    # grants: a team granted other banks does not see this one; a matcher cannot write or reindex
    scoped, _ = login(service, "matcher-a")
    assert bank not in scoped.get(service.url + "/ui/banks").text
    assert scoped.get(service.url + f"/ui/banks/{bank}").status_code == 403
    matcher, _ = login(service, "matcher")
    assert matcher.get(service.url + f"/ui/banks/{bank}").status_code == 200
    assert matcher.post(action, data={"enabled": "false"}, headers={"Origin": service.url}).status_code == 403
    assert matcher.get(service.url + "/ui/indexes").status_code == 403
    assert matcher.post(service.url + "/ui/reindex", headers={"Origin": service.url}).status_code == 403

    # only stored photos have thumbnails; a page without a token is the login form (401)
    text = service.ok("POST", f"/v1/banks/{bank}/entries", json={"text": "no thumbnail"})["entry_id"]
    assert session.get(service.url + f"/ui/banks/{bank}/entries/{text}/thumbnail").status_code == 404
    anonymous = service.call("GET", "/ui/banks", team=None)
    assert anonymous.status_code == 401 and 'id="login"' in anonymous.text
    assert service.call("POST", "/ui/login", team=None, data={"token": "wrong"}, headers={"Origin": service.url}).status_code == 401
