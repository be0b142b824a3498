"""Replies, reactions, edits, deletions, mentions and search in the web client, as two people see them
live; the phone layout; and a first visit that asks the server nothing it must refuse."""
import secrets

from selenium.webdriver.common.action_chains import ActionChains
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from test_web_client import api_call, badge, bodies, open_conversation, send, sign_up, visible, wait, wait_for_body


# ---------------------------------------------------------------------------------------------
# Helpers: read what a message shows in one script (the list re-renders on every event).

def row(browser, text):
    """The <li> of the message whose body reads `text`."""
    def find(b):
        for item in b.find_elements(By.CSS_SELECTOR, "#message-list .message"):
            if item.find_element(By.CSS_SELECTOR, ".body").text == text:
                return item
        return False
    return wait(browser).until(find)


def shown(browser, seq):
    """What the message with this seq shows: body, classes, edited marker, quote, reactions."""
    return browser.execute_script(
        """
        const li = document.querySelector('#message-list .message[data-seq="' + arguments[0] + '"]');
        if (!li) return null;
        return {
          body: li.querySelector('.body').textContent,
          classes: [...li.classList],
          edited: Boolean(li.querySelector('.edited')),
          quote: li.querySelector('.reply-quote') ? li.querySelector('.reply-quote').innerText.replace(/\\s+/g, ' ').trim() : null,
          mentions: [...li.querySelectorAll('.body .mention-me')].map(e => e.textContent),
          reactions: [...li.querySelectorAll('.reaction')].map(e => ({
            emoji: e.dataset.emoji, count: e.querySelector('.reaction-count').textContent, mine: e.classList.contains('mine') })),
          actions: [...li.querySelectorAll('.message-actions button')].map(e => e.dataset.action),
        };
        """,
        seq,
    )


def seq_of(browser, text):
    return int(row(browser, text).get_attribute("data-seq"))


def click_in(browser, text, css):
    """Clicks an element inside the message with this body, looking again if a re-render replaced it."""
    def click(b):
        row(b, text).find_element(By.CSS_SELECTOR, css).click()
        return True
    wait(browser).until(click)


def hover_action(browser, text, action):
    """Desktop: hover a message and click one of its actions (in one retried step: the list
    re-renders on every event)."""
    def hover_and_click(b):
        item = row(b, text)
        ActionChains(b).move_to_element(item.find_element(By.CSS_SELECTOR, ".bubble")).perform()
        button = item.find_element(By.CSS_SELECTOR, f".message-actions [data-action={action}]")
        if not button.is_displayed():
            return False
        button.click()
        return True
    wait(browser).until(hover_and_click)


def click(browser, css):
    """Clicks the element once it is visible, looking again if a re-render replaced it."""
    def find_and_click(b):
        element = b.find_element(By.CSS_SELECTOR, css)
        if not element.is_displayed():
            return False
        element.click()
        return True
    wait(browser).until(find_and_click)


def pick_emoji(browser, emoji):
    click(browser, f"#message-list .emoji-picker [data-emoji='{emoji}']")


def composer_mode(browser):
    return browser.execute_script(
        "const bar = document.getElementById('composer-context');"
        "return bar.hidden ? '' : document.getElementById('composer-context-label').textContent")


def accept_confirm(browser):
    wait(browser).until(EC.alert_is_present())
    browser.switch_to.alert.accept()


def record_notifications(browser):
    """Replaces the Notification API with a recorder that has permission (headless shows none), and
    puts the tab in the background (`set_tab_hidden` brings it back)."""
    browser.execute_script(
        """
        window.__notes = [];
        window.__hidden = true;
        Object.defineProperty(document, 'visibilityState', {
          configurable: true, get: () => (window.__hidden ? 'hidden' : 'visible') });
        window.Notification = class {
          static permission = 'granted';
          static requestPermission() { return Promise.resolve('granted'); }
          constructor(title, options) { window.__notes.push({ title, body: options.body }); }
          addEventListener() {}
          close() {}
        };
        """)


def set_tab_hidden(browser, hidden):
    browser.execute_script(
        "window.__hidden = arguments[0]; document.dispatchEvent(new Event('visibilitychange'))", hidden)


def new_group(browser, name, member_username):
    browser.find_element(By.ID, "new-group-button").click()
    form = visible(browser, "#new-group-form")
    form.find_element(By.NAME, "name").send_keys(name)
    browser.find_element(By.ID, "new-group-search").send_keys(member_username)
    visible(browser, "#new-group-results .result").click()
    visible(browser, "#new-group-chosen .chip")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda b: b.find_element(By.ID, "conversation-title").text == name)


def register(base, name):
    suffix = secrets.token_hex(3)
    user = api_call(base, "POST", "/api/v1/auth/register",
                    {"username": name + suffix, "email": f"{name}{suffix}@example.com",
                     "password": "correct horse battery", "displayName": name.capitalize()})
    return user["accessToken"], user["user"]


def direct_with(base, token, username):
    user_id = api_call(base, "GET", "/api/v1/users?query=" + username, token=token)["users"][0]["id"]
    return api_call(base, "POST", "/api/v1/conversations", {"type": "direct", "userId": user_id}, token)["conversation"]["id"]


def no_script_errors(browser):
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e.get("source") != "network"]
    assert errors == [], errors


# ---------------------------------------------------------------------------------------------

def test_reply_react_edit_delete_and_mention_live(server, browser_factory, artifacts):
    alice, bob = browser_factory(), browser_factory()
    sign_up(alice, server, "alice")
    bob_username = sign_up(bob, server, "bob")
    record_notifications(bob)

    new_group(alice, "Launch", bob_username)
    send(alice, "Deploy plan is ready")
    wait_for_body(alice, "Deploy plan is ready")

    # @ offers the members; Enter picks one. Bob, looking elsewhere, gets a mention badge and a
    # desktop notification that says he was mentioned.
    box = alice.find_element(By.ID, "composer-input")
    box.send_keys("@" + bob_username[:3])
    option = visible(alice, "#mention-suggestions .mention-option")
    assert option.get_attribute("data-username") == bob_username
    box.send_keys(Keys.ENTER)
    assert box.get_attribute("value") == "@" + bob_username + " "
    box.send_keys("please review", Keys.ENTER)
    mention_text = "@" + bob_username + " please review"
    wait_for_body(alice, mention_text)
    wait(bob).until(lambda b: badge(b, "Launch") == "2")
    wait(bob).until(lambda b: b.execute_script(
        "return [...document.querySelectorAll('#conversation-list .mention-badge')].map(e => e.textContent)") == ["@1"])
    assert bob.title == "(2) Parley"
    notes = bob.execute_script("return window.__notes")
    assert {"title": "Alice mentioned you in Launch", "body": mention_text} in notes, notes

    # Back in the foreground Bob reads; nothing more pops up while he looks at the page.
    set_tab_hidden(bob, False)
    notes_before = len(notes)
    open_conversation(bob, "Launch")
    wait_for_body(bob, mention_text)
    mention_seq = seq_of(bob, mention_text)
    assert shown(bob, mention_seq)["mentions"] == ["@" + bob_username]
    assert "mentions-me" in shown(bob, mention_seq)["classes"]
    wait(bob).until(lambda b: b.execute_script("return document.querySelectorAll('#conversation-list .mention-badge').length") == 0)
    assert "mentions-me" not in shown(alice, mention_seq)["classes"]

    # Bob replies to the plan; alice sees the quote and, clicking it, the original highlighted.
    plan_seq = seq_of(bob, "Deploy plan is ready")
    hover_action(bob, "Deploy plan is ready", "reply")
    assert composer_mode(bob) == "Replying to Alice"
    send(bob, "Looks good")
    wait_for_body(alice, "Looks good")
    reply_seq = seq_of(alice, "Looks good")
    assert shown(alice, reply_seq)["quote"] == "Alice Deploy plan is ready"
    assert composer_mode(bob) == ""
    click_in(alice, "Looks good", ".reply-quote")
    wait(alice).until(lambda b: "highlighted" in shown(b, plan_seq)["classes"])

    # Reactions: bob picks 👍, alice sees it and joins, bob takes his back.
    hover_action(bob, "Deploy plan is ready", "react")
    pick_emoji(bob, "👍")
    wait(alice).until(lambda b: shown(b, plan_seq)["reactions"] == [{"emoji": "👍", "count": "1", "mine": False}])
    click_in(alice, "Deploy plan is ready", ".reaction")
    wait(alice).until(lambda b: shown(b, plan_seq)["reactions"] == [{"emoji": "👍", "count": "2", "mine": True}])
    wait(bob).until(lambda b: shown(b, plan_seq)["reactions"] == [{"emoji": "👍", "count": "2", "mine": True}])
    click_in(bob, "Deploy plan is ready", ".reaction")
    wait(bob).until(lambda b: shown(b, plan_seq)["reactions"] == [{"emoji": "👍", "count": "1", "mine": False}])
    wait(alice).until(lambda b: shown(b, plan_seq)["reactions"] == [{"emoji": "👍", "count": "1", "mine": True}])

    # Alice edits the plan from its actions: bob sees the new text, the edited marker, and his
    # reply's quote follows.
    hover_action(alice, "Deploy plan is ready", "edit")
    assert composer_mode(alice) == "Editing message"
    box = alice.find_element(By.ID, "composer-input")
    assert box.get_attribute("value") == "Deploy plan is ready"
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("Deploy plan v2 is ready", Keys.ENTER)
    wait(bob).until(lambda b: shown(b, plan_seq)["body"] == "Deploy plan v2 is ready" and shown(b, plan_seq)["edited"])
    wait(bob).until(lambda b: shown(b, reply_seq)["quote"] == "Alice Deploy plan v2 is ready")
    assert shown(bob, plan_seq)["reactions"] == [{"emoji": "👍", "count": "1", "mine": False}]

    # ↑ in the empty composer edits alice's last message; Esc leaves it as it was, Enter saves.
    box.send_keys(Keys.ARROW_UP)
    wait(alice).until(lambda b: composer_mode(b) == "Editing message")
    assert box.get_attribute("value") == mention_text
    box.send_keys(Keys.ESCAPE)
    wait(alice).until(lambda b: composer_mode(b) == "")
    assert box.get_attribute("value") == ""
    box.send_keys(Keys.ARROW_UP)
    wait(alice).until(lambda b: composer_mode(b) == "Editing message")
    box.send_keys(" today", Keys.ENTER)
    wait(bob).until(lambda b: shown(b, mention_seq)["body"] == mention_text + " today" and shown(b, mention_seq)["edited"])
    assert shown(bob, mention_seq)["mentions"] == ["@" + bob_username]

    # Bob may not delete alice's messages; alice owns the group and may delete bob's.
    assert shown(bob, plan_seq)["actions"] == ["reply", "react"]
    assert shown(bob, reply_seq)["actions"] == ["reply", "react", "edit", "delete"]
    hover_action(alice, "Looks good", "delete")
    accept_confirm(alice)
    for browser in (alice, bob):
        wait(browser).until(lambda b: shown(b, reply_seq)["body"] == "Message deleted" and "deleted" in shown(b, reply_seq)["classes"])
        assert shown(browser, reply_seq)["actions"] == []
    assert "Looks good" not in bodies(bob)
    # Edits and deletions are no news: nothing popped up while Bob's tab was in view.
    assert len(bob.execute_script("return window.__notes")) == notes_before

    # A reload shows the same state, from the server.
    bob.refresh()
    visible(bob, "#app-view")
    open_conversation(bob, "Launch")
    wait(bob).until(lambda b: shown(b, reply_seq) is not None)
    assert shown(bob, reply_seq)["body"] == "Message deleted"
    assert shown(bob, plan_seq)["body"] == "Deploy plan v2 is ready" and shown(bob, plan_seq)["edited"]
    assert shown(bob, plan_seq)["reactions"] == [{"emoji": "👍", "count": "1", "mine": False}]
    alice.save_screenshot(str(artifacts / "web-message-features.png"))
    for browser in (alice, bob):
        no_script_errors(browser)


# Sockets the test can cut and keep from reconnecting (they go to a closed port while held).
HOLDABLE_SOCKETS = """
const Real = window.WebSocket;
window.__hold = false;
window.__sockets = [];
window.WebSocket = class extends Real {
  constructor(url, protocols) {
    super(window.__hold ? 'ws://127.0.0.1:9/held' : url, protocols);
    window.__sockets.push(this);
  }
};
"""


def test_changes_missed_while_disconnected_arrive_with_sync(server, browser_factory):
    bob = browser_factory()
    bob_username = sign_up(bob, server, "bob")
    token, _ = register(server, "alice")
    conversation = direct_with(server, token, bob_username)
    messages = [api_call(server, "POST", f"/api/v1/conversations/{conversation}/messages", {"body": f"note {i}"}, token)["message"]
                for i in range(1, 4)]

    # Bob's connection drops and cannot come back (new sockets go nowhere) while alice edits,
    # deletes, reacts and writes: none of it reaches him live.
    bob.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOLDABLE_SOCKETS})
    bob.refresh()
    open_conversation(bob, "Alice")
    wait_for_body(bob, "note 3")
    wait(bob).until(lambda b: b.execute_script("return window.__sockets.some(ws => ws.readyState === WebSocket.OPEN)"))
    bob.execute_script("window.__hold = true; for (const ws of window.__sockets) ws.close()")
    visible(bob, "#offline-banner")
    path = f"/api/v1/conversations/{conversation}/messages/"
    api_call(server, "PATCH", path + messages[0]["id"], {"body": "note 1, corrected"}, token)
    api_call(server, "DELETE", path + messages[1]["id"], token=token)
    api_call(server, "PUT", path + messages[2]["id"] + "/reactions/%F0%9F%8E%89", token=token)
    send_after = api_call(server, "POST", f"/api/v1/conversations/{conversation}/messages", {"body": "note 4"}, token)["message"]
    assert send_after["seq"] == 4

    # The connection comes back; the client's sync brings the changes and the new message.
    bob.execute_script("window.__hold = false; window.dispatchEvent(new Event('online'))")
    wait(bob, 30).until(lambda b: shown(b, messages[0]["seq"])["body"] == "note 1, corrected")
    wait(bob).until(lambda b: shown(b, messages[1]["seq"])["body"] == "Message deleted")
    wait(bob).until(lambda b: shown(b, messages[2]["seq"])["reactions"] == [{"emoji": "🎉", "count": "1", "mine": False}])
    wait_for_body(bob, "note 4")
    assert shown(bob, messages[0]["seq"])["edited"]


def test_search_opens_the_hit_in_place(server, browser_factory):
    browser = browser_factory()
    username = sign_up(browser, server, "erin")
    token, _ = register(server, "seeder")
    conversation = direct_with(server, token, username)
    # The hit is far back: neither the newest page nor one more holds it, so opening it loads the
    # history around it on its own.
    total = 250
    hit_body = "the zebra crossing <b>moved</b> & more"
    expected = [hit_body if i == 7 else f"filler {i}" for i in range(1, total + 1)]
    for body in expected:
        api_call(server, "POST", f"/api/v1/conversations/{conversation}/messages", {"body": body}, token)
    wait(browser).until(lambda b: badge(b, "Seeder") == str(total))

    search = browser.find_element(By.ID, "search-input")
    search.send_keys("zebra", Keys.ENTER)
    visible(browser, "#search-results .search-hit")
    wait(browser).until(lambda b: b.find_element(By.ID, "search-status").text == "1 message")
    snippet = browser.execute_script(
        "const s = document.querySelector('#search-results .hit-snippet');"
        "return { text: s.textContent, marks: [...s.querySelectorAll('mark')].map(m => m.textContent),"
        " elements: [...s.querySelectorAll('*')].map(e => e.tagName) }")
    # The highlight's escaped markup shows as text; only the <mark>s are elements.
    assert snippet == {"text": hit_body, "marks": ["zebra"], "elements": ["MARK"]}
    assert "Seeder" in browser.find_element(By.CSS_SELECTOR, "#search-results .search-hit").text

    click(browser, "#search-results .search-hit")
    wait(browser).until(lambda b: "highlighted" in (shown(b, 7) or {}).get("classes", []))
    assert browser.find_element(By.ID, "conversation-title").text == "Seeder"
    in_view = browser.execute_script(
        "const r = document.querySelector('#message-list .message[data-seq=\"7\"]').getBoundingClientRect();"
        "const s = document.getElementById('message-scroller').getBoundingClientRect();"
        "return r.top >= s.top && r.bottom <= s.bottom")
    assert in_view
    assert f"filler {total}" not in bodies(browser)
    assert visible(browser, "#jump-latest").text.startswith("Jump to the latest")

    # Scrolling down fills in the newer messages, with nothing missing in between.
    for _ in range(20):
        if bodies(browser) == expected:
            break
        count = len(bodies(browser))
        browser.execute_script("const s = document.getElementById('message-scroller'); s.scrollTop = s.scrollHeight")
        try:
            wait(browser, 3).until(lambda b: len(bodies(b)) > count)
        except TimeoutException:
            continue
    assert bodies(browser) == expected
    wait(browser).until(EC.invisibility_of_element_located((By.ID, "jump-latest")))

    # Clearing the box brings the conversation list back.
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys(Keys.BACKSPACE)
    visible(browser, "#conversation-list")
    assert not browser.find_element(By.ID, "search-panel").is_displayed()
    no_script_errors(browser)


def touch_point(browser, css, text=None):
    """The centre of an element (in the message with this body, if given), looked for again if a
    re-render replaced it."""
    def centre(b):
        element = row(b, text).find_element(By.CSS_SELECTOR, css) if text else b.find_element(By.CSS_SELECTOR, css)
        if not element.is_displayed():
            return False
        return b.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]", element)
    x, y = wait(browser).until(centre)
    return [{"x": x, "y": y}]


def long_press(browser, text):
    """Holds a finger on a message until its actions open, then lifts it (touch events through the
    DevTools protocol: the finger stays down between the two commands)."""
    browser.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": touch_point(browser, ".body", text)})
    try:
        wait(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#message-list .message.actions-open"))
    finally:
        browser.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def tap(browser, css):
    browser.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": touch_point(browser, css)})
    browser.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def no_horizontal_overflow(browser):
    return browser.execute_script(
        "const d = document.documentElement, s = document.getElementById('message-scroller');"
        "return d.scrollWidth <= d.clientWidth && s.scrollWidth <= s.clientWidth")


def test_message_actions_on_a_phone(server, browser_factory, artifacts):
    phone = browser_factory(390, 844)
    assert phone.execute_script("return innerWidth") == 390
    username = sign_up(phone, server, "fay")
    token, _ = register(server, "gus")
    conversation = direct_with(server, token, username)
    api_call(server, "POST", f"/api/v1/conversations/{conversation}/messages", {"body": "Lunch at noon?"}, token)

    open_conversation(phone, "Gus")
    wait_for_body(phone, "Lunch at noon?")
    send(phone, "Sounds good")
    wait(phone).until(lambda b: b.execute_script(
        "return [...document.querySelectorAll('#message-list .message.own')].some(e => e.dataset.seq)"))

    # A long press opens the actions under the message; React opens the picker.
    long_press(phone, "Lunch at noon?")
    lunch = seq_of(phone, "Lunch at noon?")
    assert shown(phone, lunch)["actions"] == ["reply", "react"]
    assert no_horizontal_overflow(phone)
    phone.save_screenshot(str(artifacts / "web-phone-actions.png"))
    tap(phone, "#message-list .actions-open [data-action=react]")
    assert no_horizontal_overflow(phone)
    tap(phone, "#message-list .emoji-picker [data-emoji='❤️']")
    wait(phone).until(lambda b: shown(b, lunch)["reactions"] == [{"emoji": "❤️", "count": "1", "mine": True}])
    wait(phone).until(lambda b: not b.find_elements(By.CSS_SELECTOR, "#message-list .actions-open"))

    # Edit and delete one's own message, all by touch.
    long_press(phone, "Sounds good")
    tap(phone, "#message-list .actions-open [data-action=edit]")
    wait(phone).until(lambda b: composer_mode(b) == "Editing message")
    box = phone.find_element(By.ID, "composer-input")
    box.send_keys(", see you there", Keys.ENTER)
    own = seq_of(phone, "Sounds good, see you there")
    wait(phone).until(lambda b: shown(b, own)["edited"])
    long_press(phone, "Sounds good, see you there")
    tap(phone, "#message-list .actions-open [data-action=delete]")
    accept_confirm(phone)
    wait(phone).until(lambda b: shown(b, own)["body"] == "Message deleted")
    assert no_horizontal_overflow(phone)
    phone.save_screenshot(str(artifacts / "web-phone-after-actions.png"))
    no_script_errors(phone)


def failed_requests(browser):
    """Requests of this page that failed: console network errors and resource timings of 4xx/5xx."""
    logged = [e["message"] for e in browser.get_log("browser") if e.get("source") == "network"]
    timed = browser.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.responseStatus >= 400)"
        ".map(e => e.name + ' ' + e.responseStatus)")
    return logged + timed


def api_requests(browser):
    return browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname).filter(p => p.startsWith('/api/'))")


def test_first_visit_makes_no_failing_requests(server, browser_factory):
    browser = browser_factory()
    browser.get(server + "/")
    visible(browser, "#signin-form")
    wait(browser).until(lambda b: b.execute_script("return document.readyState") == "complete")
    assert failed_requests(browser) == []
    assert api_requests(browser) == []

    # After signing out the page knows there is no session either.
    sign_up(browser, server, "hal")
    browser.find_element(By.ID, "signout-button").click()
    visible(browser, "#auth-view")
    browser.get_log("browser")  # drop what signing up logged
    browser.refresh()
    visible(browser, "#signin-form")
    wait(browser).until(lambda b: b.execute_script("return document.readyState") == "complete")
    assert failed_requests(browser) == []
    assert api_requests(browser) == []

    # A session that ended elsewhere (its HttpOnly cookies gone, the readable hint left) costs one
    # probe; the page then drops the hint and stops asking.
    sign_up(browser, server, "ivy")
    assert "parley_signed_in=1" in browser.execute_script("return document.cookie")
    browser.execute_cdp_cmd("Network.deleteCookies", {"name": "parley_access", "url": server + "/"})
    browser.execute_cdp_cmd("Network.deleteCookies", {"name": "parley_refresh", "url": server + "/api/v1/auth/refresh"})
    browser.refresh()
    visible(browser, "#signin-form")
    wait(browser).until(lambda b: "parley_signed_in" not in b.execute_script("return document.cookie"))
    browser.get_log("browser")  # drop the probe's expected 401s
    browser.refresh()
    visible(browser, "#signin-form")
    wait(browser).until(lambda b: b.execute_script("return document.readyState") == "complete")
    assert failed_requests(browser) == []
    assert api_requests(browser) == []


def test_dark_theme_follows_the_system(server, browser_factory):
    browser = browser_factory()
    browser.get(server + "/")
    visible(browser, "#signin-form")
    background = "return getComputedStyle(document.documentElement).backgroundColor"
    light = browser.execute_script(background)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    wait(browser).until(lambda b: b.execute_script(background) != light)
    dark = browser.execute_script(
        "const c = getComputedStyle(document.documentElement).backgroundColor.match(/\\d+/g).map(Number); return c[0] + c[1] + c[2]")
    assert dark < 150


NOTIFICATION_PROBE = """
window.__asked = 0;
window.Notification = class {
  static permission = 'default';
  static requestPermission() { window.__asked += 1; return Promise.resolve('default'); }
  addEventListener() {}
  close() {}
};
"""


def test_permission_asked_on_a_click_and_own_messages_count_as_read(server, browser_factory):
    browser = browser_factory()
    # In every page this tab loads, before the web client's scripts run.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": NOTIFICATION_PROBE})
    username = sign_up(browser, server, "una")
    bob_token, _ = register(server, "bob")
    carol_token, _ = register(server, "carol")
    with_bob = direct_with(server, bob_token, username)
    direct_with(server, carol_token, username)
    api_call(server, "POST", f"/api/v1/conversations/{with_bob}/messages", {"body": "Morning"}, bob_token)

    # A page that restores its session asks nothing by itself; the first click on a conversation does.
    browser.refresh()
    visible(browser, "#app-view")
    wait(browser).until(lambda b: badge(b, "Bob") == "1")
    assert browser.execute_script("return window.__asked") == 0
    open_conversation(browser, "Bob")
    wait_for_body(browser, "Morning")
    assert browser.execute_script("return window.__asked") == 1

    # Una answers and looks at another conversation; Bob's next message is her one unread message
    # (her own message moved her read mark, as it does on the server).
    send(browser, "Morning to you")
    wait(browser).until(lambda b: row(b, "Morning to you").get_attribute("data-seq"))
    open_conversation(browser, "Carol")
    api_call(server, "POST", f"/api/v1/conversations/{with_bob}/messages", {"body": "Coffee?"}, bob_token)
    wait(browser).until(lambda b: badge(b, "Bob") != "")
    assert badge(browser, "Bob") == "1"
    assert browser.title == "(1) Parley"
    no_script_errors(browser)
