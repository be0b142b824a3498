"""The Account dialog: the places an account is signed in (this device marked, another one signed out
from the list) and a password change that signs the other sessions out, all on a phone."""
import json
import secrets
import urllib.error
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from test_message_features import no_script_errors
from test_web_client import visible, wait

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
CHANGED = "Password changed. Your other sessions were signed out."


def call(base, method, path, body=None, token=None, user_agent=None):
    """An API request that answers (status, body) whatever the status, as another device would send it."""
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    if user_agent:
        request.add_header("user-agent", user_agent)
    try:
        with urllib.request.urlopen(request) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, json.loads(text) if text else None


def login(base, username, password, user_agent):
    return call(base, "POST", "/api/v1/auth/login", {"login": username, "password": password}, user_agent=user_agent)


def shown_sessions(browser):
    return browser.execute_script(
        """
        return [...document.querySelectorAll('#session-list .session')].map(e => ({
          id: e.dataset.id, current: e.dataset.current === 'true',
          device: e.querySelector('.session-device').textContent, text: e.textContent,
          signOut: Boolean(e.querySelector('button')),
        }));
        """)


def fill_password_form(browser, current, new, confirmation):
    form = browser.find_element(By.ID, "password-form")
    for name, value in (("currentPassword", current), ("newPassword", new), ("confirmPassword", confirmation)):
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def form_error(browser):
    return browser.execute_script(
        "const e = document.querySelector('#password-form .form-error'); return e.hidden ? '' : e.textContent")


def no_horizontal_overflow(browser):
    return browser.execute_script(
        "const d = document.documentElement, a = document.getElementById('account-dialog');"
        "return d.scrollWidth <= window.innerWidth && a.scrollWidth <= a.clientWidth")


def test_sessions_and_password_change(server, browser_factory, artifacts):
    # The account is made on a "phone" through the API: that is its first session.
    username = f"erin{secrets.token_hex(3)}"
    status, registered = call(server, "POST", "/api/v1/auth/register",
                              {"username": username, "email": f"{username}@example.com", "password": PASSWORD,
                               "displayName": "Erin"}, user_agent="TestPhone/1.0")
    assert status in (200, 201), registered
    phone_token = registered["accessToken"]

    # Then Erin signs in on a phone-sized browser: the second.
    browser = browser_factory(width=390, height=844)
    browser.get(server + "/")
    form = visible(browser, "#signin-form")
    form.find_element(By.NAME, "login").send_keys(username)
    form.find_element(By.NAME, "password").send_keys(PASSWORD)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    visible(browser, "#app-view")
    wait(browser).until(lambda b: b.find_element(By.ID, "me-name").text == "Erin")

    # The Account dialog lists both, this browser marked as this device and first.
    visible(browser, "#account-button").click()
    visible(browser, "#account-dialog")
    wait(browser).until(lambda b: len(shown_sessions(b)) == 2)
    sessions = shown_sessions(browser)
    this, phone = sessions
    assert this["current"] and not phone["current"], sessions
    assert this["device"].startswith("Chrome on "), this
    assert "This device" in this["text"] and not this["signOut"]
    assert phone["device"] == "TestPhone/1.0" and phone["signOut"]
    assert "This device" not in phone["text"]
    assert all("Signed in" in s["text"] or "Last active" in s["text"] for s in sessions), sessions
    assert no_horizontal_overflow(browser)
    browser.save_screenshot(str(artifacts / "web-account-phone.png"))

    # Signing the phone out from the list removes it, and its token stops working at once.
    assert call(server, "GET", "/api/v1/users/me", token=phone_token)[0] == 200
    browser.find_element(By.CSS_SELECTOR, f'#session-list .session[data-id="{phone["id"]}"] button').click()
    wait(browser).until(lambda b: [s["id"] for s in shown_sessions(b)] == [this["id"]])
    assert "Signed out TestPhone/1.0" in browser.find_element(By.ID, "sessions-status").text
    assert call(server, "GET", "/api/v1/users/me", token=phone_token)[0] == 401

    # A tablet signs in meanwhile, to be signed out by the password change.
    status, tablet = login(server, username, PASSWORD, "TestTablet/2.0")
    assert status == 200, tablet
    tablet_token = tablet["accessToken"]

    # Checked in the page before anything is sent: a short password, a confirmation that differs.
    fill_password_form(browser, PASSWORD, "short", "short")
    wait(browser).until(lambda b: "at least 8" in form_error(b))
    fill_password_form(browser, PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "!")
    wait(browser).until(lambda b: "do not match" in form_error(b))

    # A wrong current password: the server's words, and nothing changes.
    fill_password_form(browser, "not my password", NEW_PASSWORD, NEW_PASSWORD)
    wait(browser).until(lambda b: "incorrect" in form_error(b).lower())
    assert browser.find_element(By.ID, "password-status").text == ""
    assert call(server, "GET", "/api/v1/users/me", token=tablet_token)[0] == 200

    # The right one: success, the list refreshed to this device alone, the tablet signed out.
    fill_password_form(browser, PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
    wait(browser).until(lambda b: b.find_element(By.ID, "password-status").text == CHANGED)
    assert form_error(browser) == ""
    assert browser.find_element(By.CSS_SELECTOR, "#password-form input[name=currentPassword]").get_attribute("value") == ""
    wait(browser).until(lambda b: [s["id"] for s in shown_sessions(b)] == [this["id"]])
    assert call(server, "GET", "/api/v1/users/me", token=tablet_token)[0] == 401

    # The new password signs in; the old one no longer does.
    assert login(server, username, PASSWORD, "TestPhone/1.0")[0] == 401
    assert login(server, username, NEW_PASSWORD, "TestPhone/1.0")[0] == 200

    # This browser stays signed in.
    me = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/v1/users/me', { credentials: 'same-origin' }).then((r) => done(r.status));")
    assert me == 200

    # Still fits the phone, and follows the dark theme with the rest of the client.
    assert no_horizontal_overflow(browser)
    background = "const c = getComputedStyle(document.getElementById('account-dialog')).backgroundColor.match(/\\d+/g).map(Number);" \
                 "return c[0] + c[1] + c[2]"
    assert browser.execute_script(background) > 600
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    wait(browser).until(lambda b: b.execute_script(background) < 150)
    assert no_horizontal_overflow(browser)
    browser.save_screenshot(str(artifacts / "web-account-phone-dark.png"))

    # Esc closes the dialog and gives focus back to the button that opened it.
    browser.find_element(By.CSS_SELECTOR, "#password-form input[name=currentPassword]").send_keys(Keys.ESCAPE)
    wait(browser).until(lambda b: not b.execute_script("return document.getElementById('account-dialog').open"))
    assert browser.execute_script("return document.activeElement.id") == "account-button"
    no_script_errors(browser)
