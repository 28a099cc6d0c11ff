"""Languages and the one text catalogue.

The language list (``LANGS``, ``Lang``) and the script functions (``detect_script``,
``normalize_text``…) are defined in :mod:`bot.nlu.text` — they are an input of the trained model —
and re-exported here, so the rest of the code imports languages and texts from one place. The
texts (:func:`t`, :func:`page_texts`) live here: editing them does not change the model's hash.
"""

from __future__ import annotations

from bot.nlu.text import (
    CANTONESE_MARKERS,
    LANGS,
    LANGUAGE_NAMES,
    Lang,
    detect_script,
    lang_or_default,
    normalize_text,
    reads_the_same_in_both_scripts,
    resolve_script,
    script_signal,
    to_simplified,
)

__all__ = [
    "Lang",
    "LANGS",
    "LANGUAGE_NAMES",
    "lang_or_default",
    "CANTONESE_MARKERS",
    "to_simplified",
    "normalize_text",
    "script_signal",
    "detect_script",
    "reads_the_same_in_both_scripts",
    "resolve_script",
]


# ---- hub system messages -----------------------------------------------------------------------
# Texts the hub itself sends (queue, agent joins, hand-back…), one entry per language. The bot's
# own replies live in domain.yml; these are the words around the handoff.
_TEXTS: dict[str, dict[str, str]] = {
    "rule": {
        "en": "first come, first served within the {queue} queue",
        "zh-Hans": "在「{queue}」队列内按先来先服务的顺序分配",
        "zh-Hant": "在「{queue}」佇列內按先到先服務的順序分配",
    },
    "queued": {
        "en": "I am passing you to a person in the {queue} queue. You are number {position}; estimated wait "
        "about {minutes} min ({rule}).",
        "zh-Hans": "正在为您转接「{queue}」的人工客服。您排在第 {position} 位，预计等待约 {minutes} 分钟（{rule}）。",
        "zh-Hant": "正在為您轉接「{queue}」的真人客服。您排在第 {position} 位，預計等候約 {minutes} 分鐘（{rule}）。",
    },
    "no_agent": {
        "en": "No specialist of the {queue} queue is online right now. Your request is recorded{case}; you can "
        "expect an answer within {minutes} minutes, here or by message.",
        "zh-Hans": "「{queue}」目前没有在线的专员。您的请求已记录{case}，"
        "预计 {minutes} 分钟内答复，会在这里或通过短信通知您。",
        "zh-Hant": "「{queue}」目前沒有在線的專員。您的請求已記錄{case}，"
        "預計 {minutes} 分鐘內回覆，會在這裡或透過簡訊通知您。",
    },
    "technical_problem": {
        "en": "Sorry, something went wrong on our side and I could not finish this automatically. "
        "Nothing you wrote is lost; a person will take over.",
        "zh-Hans": "抱歉，我们的系统出了问题，无法自动完成。您发送的内容都已保存，将由工作人员继续为您处理。",
        "zh-Hant": "抱歉，我們的系統出了問題，無法自動完成。您傳送的內容都已保存，將由工作人員繼續為您處理。",
    },
    "danger": {
        "en": "If you are in immediate danger, call the emergency number {number} now. I am passing you to a "
        "person straight away, with priority.",
        "zh-Hans": "如果您正处于紧急危险中，请立即拨打紧急电话 {number}。我正在优先为您转接工作人员。",
        "zh-Hant": "如果您正處於緊急危險中，請立即撥打緊急電話 {number}。我正在優先為您轉接專人。",
    },
    "danger_no_number": {
        "en": "If you are in immediate danger, call your local emergency number now. I am passing you to a "
        "person straight away, with priority.",
        "zh-Hans": "如果您正处于紧急危险中，请立即拨打当地紧急电话。我正在优先为您转接工作人员。",
        "zh-Hant": "如果您正處於緊急危險中，請立即撥打當地緊急電話。我正在優先為您轉接專人。",
    },
    "case_ref": {"en": " as case {case}", "zh-Hans": "（案件编号 {case}）", "zh-Hant": "（案件編號 {case}）"},
    "agent_joined": {
        "en": "{name} has joined the conversation.",
        "zh-Hans": "{name} 已加入对话。",
        "zh-Hant": "{name} 已加入對話。",
    },
    "transferred": {
        "en": "You have been transferred to the {queue} queue.",
        "zh-Hans": "已将您转到「{queue}」队列。",
        "zh-Hant": "已將您轉到「{queue}」佇列。",
    },
    "requeued": {
        "en": "The specialist could not answer in time; you keep your place in the {queue} queue.",
        "zh-Hans": "专员未能及时回复，您在「{queue}」队列中的位置保持不变。",
        "zh-Hant": "專員未能及時回覆，您在「{queue}」佇列中的位置保持不變。",
    },
    "handed_back": {
        "en": "You are talking to the automated assistant again. Ask for a person at any time.",
        "zh-Hans": "您已回到智能助手。随时可以要求转人工。",
        "zh-Hant": "您已回到智慧助理。隨時可以要求轉真人客服。",
    },
    "resolved": {
        "en": "This conversation is closed. Write again any time if you need more help.",
        "zh-Hans": "本次对话已结束。如需更多帮助，随时可以再发消息。",
        "zh-Hant": "本次對話已結束。如需更多協助，隨時可以再傳訊息。",
    },
    # Case notifications (bot.services.cases), one per case event.
    "case_created": {
        "en": "Your case {number} has been opened and assigned to {queue}. A specialist will respond by {due}.",
        "zh-Hans": "您的工单 {number} 已受理，由{queue}处理。专员将在 {due} 前回复您。",
        "zh-Hant": "您的案件 {number} 已受理，由{queue}處理。專員將於 {due} 前回覆您。",
    },
    "case_stage_changed": {
        "en": "Case {number} is now at stage: {stage}.",
        "zh-Hans": "工单 {number} 当前阶段：{stage}。",
        "zh-Hant": "案件 {number} 目前階段：{stage}。",
    },
    "case_first_response": {
        "en": "A specialist from {queue} has picked up case {number}.",
        "zh-Hans": "{queue}的专员已开始处理工单 {number}。",
        "zh-Hant": "{queue}的專員已開始處理案件 {number}。",
    },
    "case_progress_update": {
        "en": "Update on case {number}: {text}",
        "zh-Hans": "工单 {number} 进展：{text}",
        "zh-Hant": "案件 {number} 進度：{text}",
    },
    "case_sla_extended": {
        "en": "Case {number} needs more time ({reason}). Next update by {due}.",
        "zh-Hans": "工单 {number} 需要更多时间（{reason}）。下次更新时间：{due}。",
        "zh-Hant": "案件 {number} 需要更多時間（{reason}）。下次更新時間：{due}。",
    },
    "case_resolved": {
        "en": "Case {number} has been resolved. We will follow up on {follow_up}. "
        "You can reopen it if the problem persists.",
        "zh-Hans": "工单 {number} 已解决，我们将于 {follow_up} 回访。如问题仍未解决，您可以重新打开工单。",
        "zh-Hant": "案件 {number} 已解決，我們將於 {follow_up} 回訪。如問題仍未解決，您可以重新開啟案件。",
    },
    "case_confirmed": {
        "en": "Thank you for confirming that case {number} is solved.",
        "zh-Hans": "感谢您确认工单 {number} 已解决。",
        "zh-Hant": "感謝您確認案件 {number} 已解決。",
    },
    "case_reopened": {
        "en": "Case {number} has been reopened and is with {queue} again. A specialist will respond by {due}.",
        "zh-Hans": "工单 {number} 已重新打开，由{queue}继续处理。专员将在 {due} 前回复您。",
        "zh-Hant": "案件 {number} 已重新開啟，由{queue}繼續處理。專員將於 {due} 前回覆您。",
    },
    "case_follow_up": {
        "en": "We are following up on case {number}: is the problem solved? Reply in the chat to reopen "
        "the case if it is not, or rate how it was handled (1-5).",
        "zh-Hans": "我们回访工单 {number}：问题解决了吗？如未解决，请在对话中回复以重新打开工单，"
        "或为处理情况评分（1-5）。",
        "zh-Hant": "我們回訪案件 {number}：問題解決了嗎？如未解決，請在對話中回覆以重新開啟案件，"
        "或為處理情況評分（1-5）。",
    },
    "case_reopen_window_closed": {
        "en": "Case {number} was resolved on {resolved} and can be reopened only until {until}. I've passed your "
        "message on to the team; a person will pick it up and open a new case if needed.",
        "zh-Hans": "工单 {number} 已于 {resolved} 解决，只能在 {until} 之前重新打开。您的留言我已转达，"
        "客服会跟进并在需要时为您新建工单。",
        "zh-Hant": "案件 {number} 已於 {resolved} 解決，只能在 {until} 之前重新開啟。您的留言我已轉達，"
        "客服會跟進並在需要時為您新建案件。",
    },
    "case_rated": {
        "en": "Thank you for rating the handling of case {number}.",
        "zh-Hans": "感谢您对工单 {number} 的评价。",
        "zh-Hant": "感謝您對案件 {number} 的評價。",
    },
    # ---- the customer's case page (bot/web/case.js reads them, nested by group, from the hub's
    # /case-texts.js: page_texts("case_page")); "{name}" placeholders are filled by the page.
    "case_page.title": {"en": "Case {number}", "zh-Hans": "工单 {number}", "zh-Hant": "案件 {number}"},
    "case_page.team": {"en": "Handled by {team}", "zh-Hans": "处理团队：{team}", "zh-Hant": "處理團隊：{team}"},
    "case_page.loading": {"en": "Loading your case…", "zh-Hans": "正在加载工单…", "zh-Hant": "正在載入案件…"},
    "case_page.nf_title": {
        "en": "This link does not open a case",
        "zh-Hans": "此链接无法打开工单",
        "zh-Hant": "此連結無法開啟案件",
    },
    "case_page.nf_text": {
        "en": "The link may be incomplete or too old. Please use the newest link we sent you, or ask us in the chat.",
        "zh-Hans": "链接可能不完整或已过期。请使用我们最近发送给您的链接，或在对话中联系我们。",
        "zh-Hant": "連結可能不完整或已過期。請使用我們最近傳給您的連結，或在對話中聯絡我們。",
    },
    "case_page.facts": {"en": "Your case at a glance", "zh-Hans": "工单概况", "zh-Hant": "案件概況"},
    "case_page.stage": {"en": "Stage", "zh-Hans": "当前阶段", "zh-Hant": "目前階段"},
    "case_page.specialist": {"en": "Your specialist", "zh-Hans": "负责专员", "zh-Hant": "負責專員"},
    "case_page.not_assigned": {
        "en": "Not yet assigned — {team} will take your case",
        "zh-Hans": "尚未分配，{team}将处理您的工单",
        "zh-Hant": "尚未指派，{team}將處理您的案件",
    },
    "case_page.next": {"en": "Next update due", "zh-Hans": "下次更新时间", "zh-Hant": "下次更新時間"},
    "case_page.next_none": {"en": "No further update needed", "zh-Hans": "无需再更新", "zh-Hant": "無需再更新"},
    "case_page.first": {"en": "First reply due", "zh-Hans": "首次回复时间", "zh-Hant": "首次回覆時間"},
    "case_page.stages": {"en": "Progress", "zh-Hans": "处理进度", "zh-Hant": "處理進度"},
    "case_page.ext": {"en": "More time needed", "zh-Hans": "延期说明", "zh-Hant": "延期說明"},
    "case_page.ext_item": {
        "en": "{reason} — next update by {due}",
        "zh-Hans": "{reason}（下次更新：{due}）",
        "zh-Hant": "{reason}（下次更新：{due}）",
    },
    "case_page.resolved_title": {
        "en": "Is the problem solved?",
        "zh-Hans": "问题解决了吗？",
        "zh-Hant": "問題解決了嗎？",
    },
    "case_page.resolved_text": {
        "en": "We marked your case as solved on {at}. Please confirm, or reopen it if the problem is not solved.",
        "zh-Hans": "我们已于 {at} 将工单标记为已解决。请确认，如问题仍未解决可重新打开。",
        "zh-Hant": "我們已於 {at} 將案件標記為已解決。請確認，如問題仍未解決可重新開啟。",
    },
    "case_page.confirm": {"en": "Yes, it is solved", "zh-Hans": "已解决，确认", "zh-Hant": "已解決，確認"},
    "case_page.reopen_label": {
        "en": "Not solved? Tell us what is still wrong (optional)",
        "zh-Hans": "仍未解决？请告诉我们还有什么问题（可选）",
        "zh-Hant": "仍未解決？請告訴我們還有什麼問題（選填）",
    },
    "case_page.reopen": {"en": "Reopen the case", "zh-Hans": "重新打开工单", "zh-Hant": "重新開啟案件"},
    "case_page.reopen_until": {
        "en": "You can reopen until {until}.",
        "zh-Hans": "您可以在 {until} 之前重新打开。",
        "zh-Hant": "您可以在 {until} 之前重新開啟。",
    },
    "case_page.reopen_closed": {
        "en": "This case was solved on {at}; it can only be reopened until {until}. Please contact us in the chat and "
              "we will open a new case.",
        "zh-Hans": "此工单已于 {at} 解决，只能在 {until} 之前重新打开。请在对话中联系我们，我们会为您新建工单。",
        "zh-Hant": "此案件已於 {at} 解決，只能在 {until} 之前重新開啟。請在對話中聯絡我們，我們會為您新建案件。",
    },
    "case_page.confirmed_text": {
        "en": "You confirmed that the problem is solved.",
        "zh-Hans": "您已确认问题已解决。",
        "zh-Hant": "您已確認問題已解決。",
    },
    "case_page.rate_title": {
        "en": "How did we handle it?",
        "zh-Hans": "请评价我们的处理",
        "zh-Hant": "請評價我們的處理",
    },
    "case_page.score": {
        "en": "Your rating (1 = poor, 5 = excellent)",
        "zh-Hans": "评分（1 = 很差，5 = 很好）",
        "zh-Hant": "評分（1 = 很差，5 = 很好）",
    },
    "case_page.comment": {"en": "Comment (optional)", "zh-Hans": "评价内容（可选）", "zh-Hant": "評價內容（選填）"},
    "case_page.rate": {"en": "Send rating", "zh-Hans": "提交评价", "zh-Hant": "送出評價"},
    "case_page.rated": {
        "en": "You rated this case {score} out of 5. Thank you!",
        "zh-Hans": "您给本工单的评分是 {score} 分（满分 5 分），谢谢！",
        "zh-Hant": "您給本案件的評分是 {score} 分（滿分 5 分），謝謝！",
    },
    "case_page.info_title": {"en": "Add information", "zh-Hans": "补充信息", "zh-Hant": "補充資訊"},
    "case_page.info_label": {
        "en": "Anything our specialist should know (order number, what happened, what you tried)",
        "zh-Hans": "需要告诉专员的情况（订单号、经过、已尝试的办法）",
        "zh-Hant": "需要告訴專員的情況（訂單號碼、經過、已嘗試的辦法）",
    },
    "case_page.info": {"en": "Send", "zh-Hans": "发送", "zh-Hant": "送出"},
    "case_page.events": {"en": "History", "zh-Hans": "处理记录", "zh-Hant": "處理紀錄"},
    "case_page.you": {"en": "You", "zh-Hans": "您", "zh-Hant": "您"},
    "case_page.team_label": {"en": "Our team", "zh-Hans": "客服团队", "zh-Hant": "客服團隊"},
    "case_page.sent": {
        "en": "Thank you — we added it to your case.",
        "zh-Hans": "谢谢，已添加到您的工单。",
        "zh-Hant": "謝謝，已加入您的案件。",
    },
    "case_page.done_confirm": {
        "en": "Thank you for confirming.",
        "zh-Hans": "感谢您的确认。",
        "zh-Hant": "感謝您的確認。",
    },
    "case_page.done_reopen": {
        "en": "Your case is open again.",
        "zh-Hans": "工单已重新打开。",
        "zh-Hant": "案件已重新開啟。",
    },
    "case_page.done_rate": {
        "en": "Thank you for your rating.",
        "zh-Hans": "感谢您的评价。",
        "zh-Hant": "感謝您的評價。",
    },
    "case_page.choose_score": {
        "en": "Please choose a rating from 1 to 5.",
        "zh-Hans": "请选择 1 到 5 分。",
        "zh-Hant": "請選擇 1 到 5 分。",
    },
    "case_page.empty_info": {
        "en": "Please write something first.",
        "zh-Hans": "请先填写内容。",
        "zh-Hant": "請先填寫內容。",
    },
    "case_page.err": {
        "en": "That did not work: {message}",
        "zh-Hans": "操作未成功：{message}",
        "zh-Hant": "操作未成功：{message}",
    },
    "case_page.codes.already_rated": {
        "en": "You have already rated this case. Thank you!",
        "zh-Hans": "您已经评价过本工单，谢谢！",
        "zh-Hant": "您已經評價過本案件，謝謝！",
    },
    "case_page.codes.reopen_window_closed": {
        "en": "This case was solved too long ago to be reopened. Please contact us in the chat and we will open a new "
              "case.",
        "zh-Hans": "此工单解决时间已久，无法重新打开。请在对话中联系我们，我们会为您新建工单。",
        "zh-Hant": "此案件解決時間已久，無法重新開啟。請在對話中聯絡我們，我們會為您新建案件。",
    },
    "case_page.codes.wrong_stage": {
        "en": "This is not possible at the case's current stage. The page now shows the latest state.",
        "zh-Hans": "工单当前阶段不能进行此操作，页面已更新为最新状态。",
        "zh-Hant": "案件目前階段不能進行此操作，頁面已更新為最新狀態。",
    },
    "case_page.codes.rate_limited": {
        "en": "Too many attempts; please wait a minute and try again.",
        "zh-Hans": "操作过于频繁，请一分钟后再试。",
        "zh-Hant": "操作過於頻繁，請一分鐘後再試。",
    },
    "case_page.codes.bad_request": {
        "en": "Please check what you entered and try again.",
        "zh-Hans": "请检查填写的内容后重试。",
        "zh-Hant": "請檢查填寫的內容後再試。",
    },
    "case_page.offline": {
        "en": "We could not reach the server. Check your connection and try again.",
        "zh-Hans": "无法连接服务器，请检查网络后重试。",
        "zh-Hant": "無法連線到伺服器，請檢查網路後再試。",
    },
    "case_page.ev.created": {"en": "Case opened", "zh-Hans": "工单已受理", "zh-Hant": "案件已受理"},
    "case_page.ev.stage_changed": {"en": "Stage: {to}", "zh-Hans": "阶段：{to}", "zh-Hant": "階段：{to}"},
    "case_page.ev.first_response": {
        "en": "A specialist picked up your case",
        "zh-Hans": "专员已开始处理",
        "zh-Hant": "專員已開始處理",
    },
    "case_page.ev.progress_update": {
        "en": "Update: {detail}",
        "zh-Hans": "进展：{detail}",
        "zh-Hant": "進度：{detail}",
    },
    "case_page.ev.resolution": {
        "en": "Solution: {detail}",
        "zh-Hans": "解决方案：{detail}",
        "zh-Hant": "解決方案：{detail}",
    },
    "case_page.ev.sla_extended": {
        "en": "More time needed: {detail}",
        "zh-Hans": "延期：{detail}",
        "zh-Hant": "延期：{detail}",
    },
    "case_page.ev.follow_up_scheduled": {"en": "Follow-up scheduled", "zh-Hans": "已安排回访", "zh-Hant": "已安排回訪"},
    "case_page.ev.follow_up": {"en": "We followed up", "zh-Hans": "已回访", "zh-Hant": "已回訪"},
    "case_page.ev.reopened": {"en": "Reopened", "zh-Hans": "已重新打开", "zh-Hant": "已重新開啟"},
    "case_page.ev.rated": {
        "en": "Rated {detail} out of 5",
        "zh-Hans": "评分：{detail} 分",
        "zh-Hant": "評分：{detail} 分",
    },
    "case_page.ev.rating_comment": {
        "en": "Comment: {detail}",
        "zh-Hans": "评价：{detail}",
        "zh-Hant": "評價：{detail}",
    },
    "case_page.ev.customer_info": {
        "en": "You added: {detail}",
        "zh-Hans": "您补充了：{detail}",
        "zh-Hant": "您補充了：{detail}",
    },
    "case_page.ev.plan_change_withdrawn": {
        "en": "Plan change withdrawn",
        "zh-Hans": "套餐变更已撤回",
        "zh-Hant": "方案變更已撤回",
    },
    "case_page.ev.plan_change_replaced": {
        "en": "Plan change replaced",
        "zh-Hans": "套餐变更已替换",
        "zh-Hant": "方案變更已替換",
    },
}


def t(key: str, lang: str | None, **kw: object) -> str:
    """The text ``key`` (hub messages, ``case_<event>`` case notifications, ``case_page.*`` the case
    page's texts) in ``lang`` (English when the language is unknown), formatted with ``kw``. The one
    text catalogue; the case page gets its texts from it too (:func:`page_texts`)."""
    entry = _TEXTS[key]
    return entry.get(lang or "en", entry["en"]).format(**kw)


PageTexts = dict[str, str | dict[str, str]]


def page_texts(page: str) -> dict[str, PageTexts]:
    """The texts of a web page, per language: the entries ``<page>.<name>`` as ``{name: text}``
    and ``<page>.<group>.<name>`` as ``{group: {name: text}}`` — the object the page's script
    reads (the hub serves ``page_texts("case_page")`` as ``/case-texts.js``)."""
    out: dict[str, PageTexts] = {lang: {} for lang in LANGS}
    prefix = page + "."
    for key, entry in _TEXTS.items():
        if not key.startswith(prefix):
            continue
        group, _, name = key[len(prefix):].rpartition(".")
        for lang in LANGS:
            texts = out[lang]
            if not group:
                texts[name] = entry[lang]
                continue
            inner = texts.setdefault(group, {})
            assert isinstance(inner, dict), key
            inner[name] = entry[lang]
    return out
