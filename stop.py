import time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
o = webdriver.ChromeOptions(); o.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,860"]: o.add_argument(a)
d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
msgs = lambda: [(e.get_attribute("class"), e.get_attribute("data-state"), e.text[:50]) for e in d.find_elements(By.CSS_SELECTOR, "#messages .msg")]
try:
    d.get("http://127.0.0.1:18961/"); time.sleep(1.5)
    d.find_element(By.ID, "input").send_keys("Write a long essay about llamas.\n"); time.sleep(1.5)
    d.find_element(By.ID, "stop").click(); time.sleep(1.5)
    print(msgs()); print(d.find_element(By.ID, "slots").text)
    d.find_element(By.ID, "max-tokens").send_keys("20")
    d.find_element(By.ID, "input").send_keys("Thanks!\n"); time.sleep(4)
    print(msgs()[-1], msgs()[-1] and d.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].get_attribute("title"))
finally:
    d.quit()
