"""The console in real Chromium (Debian's, through Playwright for Python), run by tests/console.rs.

Three people sign in through the test issuer's sign-in page: alice decides, bob watches the same
incident in another browser context, victor is a viewer. The script asserts what each would see,
checks the list and incident pages with axe-core, and writes screenshots of the list, the incident
page and the run page. It prints what it measured; any failed check raises, and the Rust test fails.

    python console_test.py '<settings as JSON>'
"""

import json
import sys
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

settings = json.loads(sys.argv[1])
BASE = settings["base"]
INCIDENT = settings["incident"]
RUN = settings["run"]
ARTIFACTS = Path(settings["artifacts"])
AXE = settings["axe"]
SERIOUS = {"serious", "critical"}


def sign_in(browser, user, **options):
    """A new browser context signed in as `user` through the issuer's page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, **options)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{BASE}/incidents")
    expect(page).to_have_url(f"{BASE}/login?next=%2Fincidents")
    page.get_by_role("link", name="Sign in with your identity provider").click()
    page.get_by_label("Username").fill(user)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{BASE}/incidents")
    expect(page.get_by_text(f"Signed in as {user}")).to_be_visible()
    return context, page


def axe(page, what):
    """axe-core's serious and critical violations on the page; fails when there is any."""
    page.add_script_tag(path=AXE)
    violations = page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ")) }));
        }"""
    )
    bad = [v for v in violations if v["impact"] in SERIOUS]
    print(f"axe on {what}: {len(violations)} violations, {len(bad)} serious or critical")
    for v in violations:
        print(f"  {v['impact']}: {v['id']} ({v['help']}) at {v['nodes']}")
    assert not bad, f"axe-core found serious or critical violations on {what}: {bad}"


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=settings["chromium"], args=["--no-sandbox"])

    # alice: the list, keyboard selection, the incident page with its timeline and graph.
    # (Her context lets the test inject axe-core past the pages' Content-Security-Policy.)
    alice_context, alice = sign_in(browser, "alice", bypass_csp=True)
    rows = alice.locator("#incidents tbody tr.row")
    assert rows.count() >= 2, f"the list shows {rows.count()} incidents"
    expect(alice.locator("#incidents .sev").first).to_contain_text("")
    alice.keyboard.press("j")
    expect(rows.first).to_have_class("row selected")
    alice.screenshot(path=str(ARTIFACTS / "list.png"), full_page=True)
    axe(alice, "the incident list")

    alice.goto(f"{BASE}/incidents/{INCIDENT}")
    timeline = alice.locator("#timeline-svg")
    expect(timeline).to_be_visible()
    bars = alice.locator("#timeline-svg rect.alerts")
    assert bars.count() >= 1, "no alert bars on the timeline"
    expect(alice.locator("#timeline-svg circle.l-approvals")).to_have_count(1)
    graph = alice.locator("#graph-svg")
    expect(graph).to_be_visible()
    assert alice.locator("#graph-svg g.node").count() >= 3, "the graph has too few nodes"
    expect(alice.locator("#graph-svg")).to_contain_text("build-bot")
    expect(alice.locator("#timeline-table")).to_contain_text("Approval asked")
    # Zoom: the plot is scaled, the lane names stay.
    alice.get_by_role("button", name="Zoom in on the timeline").click()
    expect(timeline).to_have_attribute("data-scale", "2")
    alice.get_by_role("button", name="Show the whole timeline").click()
    expect(timeline).to_have_attribute("data-scale", "1")
    alice.screenshot(path=str(ARTIFACTS / "incident.png"), full_page=True)
    axe(alice, "the incident page")
    # The README's picture: the incident with its pending approval, timeline and graph.
    shot = browser.new_context(viewport={"width": 1280, "height": 1560},
                               storage_state=alice_context.storage_state())
    page = shot.new_page()
    page.goto(f"{BASE}/incidents/{INCIDENT}")
    page.screenshot(path=str(ARTIFACTS / "readme.png"))
    shot.close()

    # bob watches the same incident in another context.
    bob_context, bob = sign_in(browser, "bob")
    bob.goto(f"{BASE}/incidents/{INCIDENT}")
    expect(bob.locator("#approvals")).to_contain_text("Disable the access key?")
    bob.evaluate("window.cordonNotReloaded = true")
    bob.wait_for_timeout(300)  # its event stream is open

    # victor, a viewer: no Approve button, and a hand-made POST with his own CSRF token is refused.
    victor_context, victor = sign_in(browser, "victor")
    victor.goto(f"{BASE}/incidents/{INCIDENT}")
    expect(victor.locator("#approvals")).to_contain_text("Disable the access key?")
    expect(victor.get_by_role("button", name="Approve")).to_have_count(0)
    csrf = victor.locator("input[name=csrf]").first.get_attribute("value")
    answer = victor.request.post(f"{BASE}/runs/{RUN}/approvals/approve",
                                 form={"decision": "approve", "csrf": csrf},
                                 headers={"Origin": BASE})
    assert answer.status == 403, f"the viewer's POST answered {answer.status}"
    answer = victor.request.post(f"{BASE}/v1/runs/{RUN}/approvals/approve",
                                 data={"decision": "approve"},
                                 headers={"Authorization": f"Bearer {settings['victor_token']}"})
    assert answer.status == 403, f"the viewer's API call answered {answer.status}"

    # A POST without the CSRF token, with alice's session: refused, and the incident stays open.
    answer = alice.request.post(f"{BASE}/incidents/{INCIDENT}/resolve", form={}, headers={"Origin": BASE})
    assert answer.status == 403, f"a POST without the CSRF token answered {answer.status}"
    alice.reload()
    expect(alice.locator("#summary")).to_contain_text("open")

    # alice approves (after the confirmation); the run goes on.
    started = time.monotonic()
    alice.get_by_role("button", name="Approve", exact=True).click()
    alice.wait_for_url(f"**/incidents/{INCIDENT}?note=approved")
    expect(alice.get_by_role("status")).to_contain_text("approval is granted")
    # bob sees it without reloading.
    expect(bob.locator("#approvals")).to_contain_text("approved by alice via console", timeout=5000)
    seen_after = time.monotonic() - started
    assert bob.evaluate("window.cordonNotReloaded === true"), "bob's page was reloaded"
    print(f"bob saw alice's approval {seen_after * 1000:.0f} ms after she clicked")
    try:
        expect(alice.locator("#runs")).to_contain_text("succeeded", timeout=10000)
    except AssertionError:
        shown = alice.request.get(f"{BASE}/v1/runs/{RUN}",
                                  headers={"Authorization": f"Bearer {settings['victor_token']}"})
        run = shown.json()["run"]
        print("the run as the API shows it:", run["status"], json.dumps(run["steps"])[:1500])
        print("the page shows:", alice.locator("#runs").inner_text())
        raise

    alice.goto(f"{BASE}/runs/{RUN}")
    expect(alice.locator("#step-isolate")).to_contain_text("succeeded")
    expect(alice.locator("#step-approve")).to_contain_text("approved by alice via console")
    alice.screenshot(path=str(ARTIFACTS / "run.png"), full_page=True)

    # The list in a dark system theme, for the README.
    dark = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme="dark",
                               storage_state=alice_context.storage_state())
    page = dark.new_page()
    page.goto(f"{BASE}/incidents/{INCIDENT}")
    page.screenshot(path=str(ARTIFACTS / "incident-dark.png"))
    browser.close()
print(json.dumps({"ok": True, "live_ms": round(seen_after * 1000)}))
