"""The web client in real Chromium, as two (or three) people would use it."""
import re
import secrets

from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

XSS = "<img src=x onerror=alert(1)>"


def wait(browser, timeout=10):
    # Lists re-render on every event, so an element found a moment ago may be gone: look again.
    return WebDriverWait(browser, timeout, ignored_exceptions=[StaleElementReferenceException])


def visible(browser, css, timeout=10):
    return wait(browser, timeout).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def sign_up(browser, base, name):
    username = f"{name}{secrets.token_hex(3)}"
    browser.get(base + "/")
    visible(browser, "#tab-signup").click()
    form = visible(browser, "#signup-form")
    form.find_element(By.NAME, "username").send_keys(username)
    form.find_element(By.NAME, "email").send_keys(f"{username}@example.com")
    form.find_element(By.NAME, "displayName").send_keys(name.capitalize())
    form.find_element(By.NAME, "password").send_keys("correct horse battery")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    visible(browser, "#app-view")
    wait(browser).until(lambda b: b.find_element(By.ID, "me-name").text == name.capitalize())
    return username


def open_new_chat_with(browser, username):
    browser.find_element(By.ID, "new-chat-button").click()
    search = visible(browser, "#new-chat-search")
    search.send_keys(username)
    visible(browser, "#new-chat-results .result").click()
    visible(browser, "#conversation-pane")


def send(browser, text):
    box = browser.find_element(By.ID, "composer-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def bodies(browser):
    return browser.execute_script(
        "return [...document.querySelectorAll('#message-list .message .body')].map(e => e.textContent)")


def wait_for_body(browser, text, timeout=10):
    wait(browser, timeout).until(lambda b: text in bodies(b))


def conversation_item(browser, name):
    for item in browser.find_elements(By.CSS_SELECTOR, "#conversation-list .conversation-item"):
        if item.find_element(By.CSS_SELECTOR, ".item-name").text == name:
            return item
    return None


def open_conversation(browser, name):
    # The list re-renders on every event: find and click in one retried step.
    def click(b):
        item = conversation_item(b, name)
        if item is None:
            return False
        item.click()
        return True
    wait(browser).until(click)


def item_text(browser, name):
    item = conversation_item(browser, name)
    return item.text if item is not None else ""


def badge(browser, name):
    # Read in one script so a re-render between two WebDriver calls cannot leave a stale element.
    return browser.execute_script(
        """
        for (const item of document.querySelectorAll('#conversation-list .conversation-item')) {
          if (item.querySelector('.item-name')?.textContent !== arguments[0]) continue;
          const badge = item.querySelector('.badge');
          return badge ? badge.textContent : '';
        }
        return null;
        """,
        name,
    )


def last_own_status(browser):
    return browser.execute_script(
        "const own = document.querySelectorAll('#message-list .message.own'); return own.length ? own[own.length - 1].dataset.status : null")


def no_alert(browser):
    try:
        browser.switch_to.alert
        return False
    except NoAlertPresentException:
        return True


def test_direct_chat_between_two_people(server, browser_factory, artifacts):
    alice, bob = browser_factory(), browser_factory()
    sign_up(alice, server, "alice")
    bob_username = sign_up(bob, server, "bob")

    open_new_chat_with(alice, bob_username)
    assert alice.find_element(By.ID, "conversation-title").text == "Bob"
    send(alice, "Hello Bob")
    wait_for_body(alice, "Hello Bob")
    wait(alice).until(lambda b: last_own_status(b) in ("sent", "delivered"))

    # Bob has not opened the chat: it shows up live with an unread badge that counts.
    wait(bob).until(lambda b: badge(b, "Alice") == "1")
    send(alice, "Are you there?")
    wait(bob).until(lambda b: badge(b, "Alice") == "2")
    wait(bob).until(lambda b: "Are you there?" in item_text(b, "Alice"))
    assert bob.title.startswith("(2)")
    # Bob's client reported delivery, so alice's message shows delivered (not yet read).
    wait(alice).until(lambda b: last_own_status(b) == "delivered")

    open_conversation(bob, "Alice")
    wait_for_body(bob, "Are you there?")
    assert bodies(bob) == ["Hello Bob", "Are you there?"]
    wait(bob).until(lambda b: badge(b, "Alice") == "")
    wait(alice).until(lambda b: last_own_status(b) == "read")

    # Typing shows on the other side, and the reply arrives live.
    bob.find_element(By.ID, "composer-input").send_keys("Yes, I")
    wait(alice).until(lambda b: "Bob is typing" in b.find_element(By.ID, "typing-indicator").text)
    bob.find_element(By.ID, "composer-input").send_keys(" am here", Keys.ENTER)
    wait_for_body(alice, "Yes, I am here")
    wait(alice).until(lambda b: b.find_element(By.ID, "typing-indicator").text == "")

    # Shift+Enter makes a new line instead of sending.
    box = alice.find_element(By.ID, "composer-input")
    box.send_keys("first line")
    ActionChains(alice).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    box.send_keys("second line", Keys.ENTER)
    wait_for_body(bob, "first line\nsecond line")

    # Markup is shown as text, never run.
    send(alice, XSS)
    wait_for_body(bob, XSS)
    assert bob.find_elements(By.CSS_SELECTOR, "#message-list img") == []
    assert no_alert(bob) and no_alert(alice)

    # A reload shows the whole history again, from the server, in order.
    bob.refresh()
    visible(bob, "#app-view")
    wait_for_body(bob, XSS)
    assert bodies(bob) == ["Hello Bob", "Are you there?", "Yes, I am here", "first line\nsecond line", XSS]
    wait(bob).until(lambda b: badge(b, "Alice") == "")

    # Day separator and own/other distinction are on screen.
    assert bob.find_element(By.CSS_SELECTOR, "#message-list .day-separator").text == "Today"
    assert len(bob.find_elements(By.CSS_SELECTOR, "#message-list .message.own")) == 1

    bob.save_screenshot(str(artifacts / "web-desktop.png"))
    bob.set_window_size(375, 740)
    wait_for_body(bob, XSS)
    bob.save_screenshot(str(artifacts / "web-phone-conversation.png"))
    bob.find_element(By.ID, "back-button").click()
    visible(bob, "#conversation-list")
    bob.save_screenshot(str(artifacts / "web-phone-list.png"))

    # No script errors in either browser (answers like the 401 of a signed-out start are not errors).
    for browser in (alice, bob):
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE" and entry.get("source") != "network"]
        assert errors == [], errors


def test_group_with_passcode(server, browser_factory, artifacts):
    alice, carol = browser_factory(), browser_factory()
    sign_up(alice, server, "alice")
    sign_up(carol, server, "carol")

    alice.find_element(By.ID, "new-group-button").click()
    form = visible(alice, "#new-group-form")
    form.find_element(By.NAME, "name").send_keys("Book club")
    form.find_element(By.NAME, "passcode").send_keys("open-sesame")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    visible(alice, "#conversation-pane")
    wait(alice).until(lambda b: b.find_element(By.ID, "conversation-title").text == "Book club")
    group_id = re.search(r"#/c/([0-9a-f-]{36})", alice.current_url).group(1)

    # A wrong passcode is refused with the server's message; the right one lets carol in.
    carol.find_element(By.ID, "join-group-button").click()
    join = visible(carol, "#join-form")
    join.find_element(By.NAME, "groupId").send_keys(group_id)
    join.find_element(By.NAME, "passcode").send_keys("wrong")
    join.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    error = visible(carol, "#join-form .form-error")
    assert "passcode" in error.text.lower()
    passcode = join.find_element(By.NAME, "passcode")
    passcode.clear()
    passcode.send_keys("open-sesame")
    join.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(carol).until(lambda b: b.find_element(By.ID, "conversation-title").text == "Book club")

    send(carol, "Hi everyone, carol here")
    wait_for_body(alice, "Hi everyone, carol here")
    sender = alice.execute_script(
        "return document.querySelector('#message-list .message:not(.own) .sender')?.textContent")
    assert sender == "Carol"
    send(alice, "Welcome, Carol!")
    wait_for_body(carol, "Welcome, Carol!")

    # The members panel lists both, with alice as owner.
    alice.find_element(By.ID, "members-button").click()
    visible(alice, "#member-list")
    wait(alice).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#member-list .member")) == 2)
    wait(alice).until(lambda b: "owner" in b.find_element(By.ID, "member-list").text
                      and "Carol" in b.find_element(By.ID, "member-list").text)
    alice.save_screenshot(str(artifacts / "web-desktop-group.png"))


def test_sign_in_errors_and_sign_out(server, browser_factory):
    browser = browser_factory()
    username = sign_up(browser, server, "dora")
    browser.find_element(By.ID, "signout-button").click()
    visible(browser, "#auth-view")

    form = visible(browser, "#signin-form")
    form.find_element(By.NAME, "login").send_keys(username)
    form.find_element(By.NAME, "password").send_keys("not the password")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    error = visible(browser, "#signin-form .form-error")
    assert "incorrect" in error.text.lower()

    password = form.find_element(By.NAME, "password")
    password.clear()
    password.send_keys("correct horse battery")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    visible(browser, "#app-view")

    # Nothing secret is kept in web storage: the session lives in HttpOnly cookies only.
    assert browser.execute_script("return localStorage.length + sessionStorage.length") == 0
    cookies = browser.execute_script("return document.cookie")
    assert "parley_access" not in cookies and "parley_refresh" not in cookies
    # Scripts see only the hint that a session exists, which holds no credential.
    assert cookies.strip() == "parley_signed_in=1", cookies

    # Sign-up errors come from the server, in words.
    browser.find_element(By.ID, "signout-button").click()
    visible(browser, "#tab-signup").click()
    signup = visible(browser, "#signup-form")
    signup.find_element(By.NAME, "username").send_keys(username)
    signup.find_element(By.NAME, "email").send_keys("someone-else@example.com")
    signup.find_element(By.NAME, "password").send_keys("correct horse battery")
    signup.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert "taken" in visible(browser, "#signup-form .form-error").text.lower()


def test_offline_banner_and_resend_after_reconnect(restartable_server, browser_factory):
    alice, bob = browser_factory(), browser_factory()
    sign_up(alice, restartable_server.base, "alice")
    bob_username = sign_up(bob, restartable_server.base, "bob")
    open_new_chat_with(alice, bob_username)
    send(alice, "before the outage")
    wait_for_body(alice, "before the outage")
    open_conversation(bob, "Alice")
    wait_for_body(bob, "before the outage")

    # The server goes away: both see the offline banner; alice writes anyway.
    restartable_server.stop()
    visible(alice, "#offline-banner")
    visible(bob, "#offline-banner")
    send(alice, "written while offline")
    wait(alice).until(lambda b: last_own_status(b) == "pending")

    # It comes back on the same data: the clients reconnect by themselves, the pending message goes
    # out once (same clientMsgId), and bob gets it without reloading.
    restartable_server.start()
    wait(alice, 30).until(EC.invisibility_of_element_located((By.ID, "offline-banner")))
    wait_for_body(bob, "written while offline", timeout=30)
    wait(alice, 15).until(lambda b: last_own_status(b) in ("sent", "delivered", "read"))
    assert bodies(alice).count("written while offline") == 1
    assert bodies(bob) == ["before the outage", "written while offline"]
    bob.refresh()
    visible(bob, "#app-view")
    wait_for_body(bob, "written while offline")
    assert bodies(bob) == ["before the outage", "written while offline"]


def api_call(base, method, path, body=None, token=None):
    import json
    import urllib.request
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return json.loads(text) if text else None


def test_older_history_loads_on_scroll(server, browser_factory):
    browser = browser_factory()
    username = sign_up(browser, server, "erin")
    # Someone else writes 120 messages to erin through the REST API.
    suffix = secrets.token_hex(3)
    seeder = api_call(server, "POST", "/api/v1/auth/register",
                      {"username": "seeder" + suffix, "email": f"seeder{suffix}@example.com",
                       "password": "correct horse battery", "displayName": "Seeder"})
    token = seeder["accessToken"]
    erin_id = api_call(server, "GET", "/api/v1/users?query=" + username, token=token)["users"][0]["id"]
    conversation = api_call(server, "POST", "/api/v1/conversations", {"type": "direct", "userId": erin_id}, token)["conversation"]["id"]
    for i in range(1, 121):
        api_call(server, "POST", f"/api/v1/conversations/{conversation}/messages", {"body": f"message {i}"}, token)

    wait(browser).until(lambda b: badge(b, "Seeder") == "120")
    # Start from a fresh page so that nothing is in memory yet: only the newest page is fetched.
    browser.refresh()
    visible(browser, "#app-view")
    wait(browser).until(lambda b: badge(b, "Seeder") == "120")
    open_conversation(browser, "Seeder")
    wait_for_body(browser, "message 120")
    assert len(bodies(browser)) == 50, "the newest page first"
    for _ in range(10):
        browser.execute_script("document.getElementById('message-scroller').scrollTop = 0")
        try:
            wait(browser, 3).until(lambda b: len(bodies(b)) == 120)
            break
        except Exception:
            continue
    assert bodies(browser) == [f"message {i}" for i in range(1, 121)]
    wait(browser).until(lambda b: "beginning of the conversation" in b.find_element(By.ID, "history-status").text)
    wait(browser).until(lambda b: badge(b, "Seeder") == "")
