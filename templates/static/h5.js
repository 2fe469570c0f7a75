// Shared helpers of the H5 pages: calls to /mp/v1 with the session cookie, Chinese messages.
"use strict";

const MESSAGES = {
  IDENTITY_UNKNOWN: "公安人口库中未查到该身份信息，请核对证件号码",
  IDENTITY_MISMATCH: "姓名与证件号码不一致",
  CARD_ALREADY_CLAIMED: "该居民的健康卡已被其他账户领取",
  OWN_CARD_EXISTS: "本账户已领取本人的健康卡",
  FAMILY_LIMIT: "家庭成员数量已达上限",
  ALREADY_MANAGED: "该家庭成员已添加",
  STRONG_AUTH_REQUIRED: "请先完成实名强认证（短信或人脸）",
  RATE_LIMITED: "操作过于频繁，请稍后再试",
  OTP_INVALID: "验证码错误或已过期",
  OTP_LOCKED: "验证码错误次数过多，请稍后再试",
  CARD_INACTIVE: "健康卡已挂失或注销",
  UNAUTHENTICATED: "登录已过期，请重新登录",
  VALIDATION_ERROR: "填写的信息有误，请检查",
  PAYMENT_ACCOUNT_NOT_BOUND: "尚未绑定支付账户",
  CHANNEL_NOT_AVAILABLE: "该支付方式暂不可用",
};

async function api(method, path, body) {
  const options = { method, headers: { "X-EHC-H5": "1" }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const reply = await fetch(path, options);
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    if (reply.status === 401) { window.location.href = "/h5/login"; }
    const error = new Error(MESSAGES[data.code] || data.message || "请求失败");
    error.code = data.code;
    error.details = data.details;
    throw error;
  }
  return data;
}

function notice(element, text, kind) {
  element.textContent = text;
  element.className = "notice " + (kind || "");
  element.classList.remove("hidden");
}

// GB 11643 MOD 11-2 check digit of an 18-digit resident identity number.
function idCheckChar(first17) {
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  let sum = 0;
  for (let i = 0; i < 17; i++) sum += Number(first17[i]) * weights[i];
  return "10X98765432"[sum % 11];
}

function residentIdProblem(number, birthDate, gender) {
  if (!/^\d{17}[\dX]$/.test(number)) return "身份证号码应为17位数字加1位校验码";
  if (idCheckChar(number.slice(0, 17)) !== number[17]) return "身份证号码校验位不正确";
  const embedded = `${number.slice(6, 10)}-${number.slice(10, 12)}-${number.slice(12, 14)}`;
  if (birthDate && embedded !== birthDate) return "出生日期与身份证号码不一致";
  const embeddedGender = Number(number[16]) % 2 ? "1" : "2";
  if ((gender === "1" || gender === "2") && gender !== embeddedGender) return "性别与身份证号码不一致";
  return "";
}
