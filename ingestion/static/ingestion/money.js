// Exact decimal arithmetic for the money the dashboard shows: never floats.
//
// A value is {n, s}: the BigInt n scaled by 10^-s ("2400.55" is {n: 240055n, s: 2}), parsed
// from the decimal strings the API and the websocket send (Python's str(Decimal), which may
// use an exponent: "0E-8", "5E-7"). Sums and products by integer quantities are exact; only
// format() rounds, half to even to 2 places as Python's Decimal.quantize does.
(function (global) {
  "use strict";
  var ZERO = BigInt(0), ONE = BigInt(1), TWO = BigInt(2), TEN = BigInt(10);
  var PATTERN = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,3}))?$/;
  var MAX_SCALE = 40;  // more decimal places than any price or value has: refused as not money

  function pow10(places) {
    var result = ONE;
    for (var i = 0; i < places; i++) result *= TEN;
    return result;
  }

  // "123.45", "-0.0500", "5E-7", 12 (an integer) -> {n, s}; anything else -> null.
  function parse(text) {
    if (typeof text === "number") return Number.isSafeInteger(text) ? { n: BigInt(text), s: 0 } : null;
    if (typeof text !== "string") return null;
    var match = PATTERN.exec(text.trim());
    if (!match || (match[2] === "" && !match[3])) return null;
    var fraction = match[3] || "";
    var scale = fraction.length - (match[4] ? parseInt(match[4], 10) : 0);
    if (scale > MAX_SCALE || scale < -MAX_SCALE) return null;
    var n = BigInt((match[2] || "0") + fraction);
    if (scale < 0) {
      n *= pow10(-scale);
      scale = 0;
    }
    return { n: match[1] === "-" ? -n : n, s: scale };
  }

  function rescale(value, scale) {
    return value.s === scale ? value.n : value.n * pow10(scale - value.s);
  }

  function add(a, b) {
    var scale = Math.max(a.s, b.s);
    return { n: rescale(a, scale) + rescale(b, scale), s: scale };
  }

  function sub(a, b) {
    return add(a, { n: -b.n, s: b.s });
  }

  // Times an integer quantity (a JSON number from the API).
  function times(value, quantity) {
    if (!Number.isSafeInteger(quantity)) throw new RangeError("not an integer quantity: " + quantity);
    return { n: value.n * BigInt(quantity), s: value.s };
  }

  function sum(values) {
    return values.reduce(add, { n: ZERO, s: 0 });
  }

  function sign(value) {
    return value.n > ZERO ? 1 : value.n < ZERO ? -1 : 0;
  }

  // The value rounded half to even to `places`, as a BigInt scaled by 10^places.
  function rounded(value, places) {
    if (value.s <= places) return rescale(value, places);
    var divisor = pow10(value.s - places);
    var negative = value.n < ZERO;
    var magnitude = negative ? -value.n : value.n;
    var quotient = magnitude / divisor, remainder = magnitude % divisor;
    var twice = remainder * TWO;
    if (twice > divisor || (twice === divisor && quotient % TWO === ONE)) quotient += ONE;
    return negative ? -quotient : quotient;
  }

  // Digits grouped the Indian way (12,34,567), as the rest of the desk reads amounts.
  function group(digits) {
    if (digits.length <= 3) return digits;
    var head = digits.slice(0, -3), tail = digits.slice(-3);
    return head.replace(/\B(?=(\d{2})+(?!\d))/g, ",") + "," + tail;
  }

  function layout(scaled, places, grouped) {
    var negative = scaled < ZERO;
    var digits = (negative ? -scaled : scaled).toString();
    while (digits.length <= places) digits = "0" + digits;
    var whole = digits.slice(0, digits.length - places), fraction = digits.slice(digits.length - places);
    var text = (grouped ? group(whole) : whole) + (places ? "." + fraction : "");
    return (negative && /[1-9]/.test(digits) ? "-" : "") + text;
  }

  // An amount of money: rounded to 2 places (half to even), grouped: "-1,23,456.79".
  function format(value, places) {
    places = places === undefined ? 2 : places;
    return layout(rounded(value, places), places, true);
  }

  // A price as the exchange quotes it: every significant decimal, at least 2, no grouping.
  function formatPrice(value) {
    var places = value.s;
    var n = value.n;
    while (places > 2 && n % TEN === ZERO) {
      n /= TEN;
      places -= 1;
    }
    return places <= 2 ? layout(rescale({ n: n, s: places }, 2), 2, false) : layout(n, places, false);
  }

  // A position's unrealised P&L at `lastPrice`: (last - average) x quantity. Moved from the
  // server's own mark (its unrealised at its last_price) when it has one: that keeps the
  // exact open cost the server holds, which average_price (rounded to 4 places) does not.
  function unrealised(position, lastPrice) {
    var quantity = position.quantity;
    if (!quantity || lastPrice === null) return { n: ZERO, s: 0 };
    var markedAt = parse(position.last_price), marked = parse(position.unrealised);
    if (markedAt !== null && marked !== null) return add(marked, times(sub(lastPrice, markedAt), quantity));
    return times(sub(lastPrice, parse(position.average_price) || { n: ZERO, s: 0 }), quantity);
  }

  global.PortalMoney = {
    parse: parse, add: add, sub: sub, times: times, sum: sum, sign: sign, format: format,
    formatPrice: formatPrice, unrealised: unrealised
  };
})(window);
