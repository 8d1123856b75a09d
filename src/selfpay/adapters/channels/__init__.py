"""Payment channels behind services.ports.PaymentChannel, registered by entry point
(group `selfpay.channels`, `build(settings) -> PaymentChannel`):

- `sandbox`: a simulated payment platform with a cashier page at /sandbox that calls the
  app back over real HTTP (signed, re-sent until acknowledged). The demo's default.
- `wechatpay`: WeChat Pay API v3 (Native, JSAPI, H5 prepay; query; close; notifications).
"""
