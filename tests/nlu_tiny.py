"""A tiny NLU training set (three intents, two scripts) for tests that train a real pipeline."""

TINY_NLU = """\
version: "3.1"
nlu:
- intent: request_refund
  examples: |
    - 我要退款
    - 请退钱给我
    - 退款
    - i want a refund
    - give me my money back
    - refund my last payment
- intent: check_case_status
  examples: |
    - 我的工单进度怎么样
    - 工单处理到哪一步了
    - check my case
    - what is the status of my case
    - any update on my ticket
- intent: out_of_scope
  examples: |
    - 明天天气怎么样
    - 播放一首歌
    - set an alarm for seven
    - what is the capital of peru
    - tell me a joke
"""
