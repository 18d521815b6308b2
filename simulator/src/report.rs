//! The HTML report: one self-contained file (no external resources). The
//! tables are written here; the four charts (throughput over time, latency
//! percentiles over time, latency distribution, response codes) are drawn as
//! inline SVG by a small inline script from the embedded summary. Each chart
//! element gets `data-rendered="true"` once drawn, and `#render-status`
//! counts them, so a headless browser's DOM shows that the charts rendered.

use crate::stats::Summary;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The summary without per-card data, as JSON safe inside `<script>`.
fn chart_data(sum: &Summary) -> String {
    let mut s = sum.clone();
    s.money.clear();
    s.baseline = None;
    serde_json::to_string(&s)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--")
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
.pass{color:#1a7f37;font-weight:600} .fail{color:#cf222e;font-weight:600}
.chart{margin:8px 0 4px} .chart svg{background:#fafafa;border:1px solid #e5e5e5}
.muted{color:#666} .legend span{margin-right:14px}
"#;

const SCRIPT: &str = r#"
(function(){
var D=JSON.parse(document.getElementById('summary-data').textContent);
var NS='http://www.w3.org/2000/svg';
var COLORS=['#0969da','#1a7f37','#bf8700','#cf222e','#8250df','#57606a','#e16f24','#116329'];
function el(n,a,p){var e=document.createElementNS(NS,n);for(var k in a)e.setAttribute(k,a[k]);if(p)p.appendChild(e);return e;}
function txt(p,x,y,s,anchor){var t=el('text',{x:x,y:y,'font-size':11,'text-anchor':anchor||'start',fill:'#444'},p);t.textContent=s;return t;}
function fmt(v){if(v>=1e6)return (v/1e6).toFixed(1)+'M';if(v>=1e3)return (v/1e3).toFixed(v>=1e4?0:1)+'k';if(v>=10)return v.toFixed(0);if(v>=1)return v.toFixed(1);return v.toFixed(v>0.01?2:3);}
function frame(id,W,H){var box=document.getElementById(id);var svg=el('svg',{width:W,height:H,viewBox:'0 0 '+W+' '+H,role:'img'},null);box.appendChild(svg);return {box:box,svg:svg};}
function done(f,n){f.box.setAttribute('data-rendered','true');f.box.setAttribute('data-points',String(n));}
function axes(svg,L,T,w,h,ymax,xs,xlabel,ylabel){
  el('line',{x1:L,y1:T+h,x2:L+w,y2:T+h,stroke:'#999'},svg);el('line',{x1:L,y1:T,x2:L,y2:T+h,stroke:'#999'},svg);
  for(var i=0;i<=4;i++){var y=T+h-h*i/4;el('line',{x1:L,y1:y,x2:L+w,y2:y,stroke:'#eee'},svg);txt(svg,L-4,y+4,fmt(ymax*i/4),'end');}
  for(var j=0;j<xs.length;j++)txt(svg,xs[j][0],T+h+14,xs[j][1],'middle');
  txt(svg,L+w/2,T+h+30,xlabel,'middle');var yl=txt(svg,12,T+h/2,ylabel,'middle');yl.setAttribute('transform','rotate(-90 12 '+(T+h/2)+')');
}
function lines(id,series,xlabel,ylabel){
  var W=1000,H=300,L=60,T=12,w=W-L-20,h=H-T-46;var f=frame(id,W,H);
  var n=0,ymax=0,xmax=1;series.forEach(function(s){s.pts.forEach(function(p){ymax=Math.max(ymax,p[1]);xmax=Math.max(xmax,p[0]);n++;});});
  if(ymax<=0)ymax=1;ymax*=1.05;
  var xs=[];for(var k=0;k<=5;k++){var xv=xmax*k/5;xs.push([L+w*k/5,fmt(xv)]);}
  axes(f.svg,L,T,w,h,ymax,xs,xlabel,ylabel);
  series.forEach(function(s,i){if(!s.pts.length)return;var d='';s.pts.forEach(function(p,j){d+=(j?'L':'M')+(L+w*p[0]/xmax).toFixed(1)+','+(T+h-h*p[1]/ymax).toFixed(1);});
    el('path',{d:d,fill:'none',stroke:COLORS[i%COLORS.length],'stroke-width':1.6,'data-series':s.name},f.svg);});
  var lg=document.createElement('div');lg.className='legend';series.forEach(function(s,i){var sp=document.createElement('span');sp.style.color=COLORS[i%COLORS.length];sp.textContent='\u25A0 '+s.name;lg.appendChild(sp);});f.box.appendChild(lg);
  done(f,n);
}
function bars(id,items,xlabel,ylabel,colorOf){
  var W=1000,H=300,L=60,T=12,w=W-L-20,h=H-T-46;var f=frame(id,W,H);
  var ymax=1;items.forEach(function(it){ymax=Math.max(ymax,it[1]);});ymax*=1.05;
  var bw=w/Math.max(items.length,1);var xs=[];var every=Math.ceil(items.length/12);
  items.forEach(function(it,i){if(i%every===0)xs.push([L+bw*i+bw/2,it[0]]);});
  axes(f.svg,L,T,w,h,ymax,xs,xlabel,ylabel);
  items.forEach(function(it,i){var bh=h*it[1]/ymax;var r=el('rect',{x:(L+bw*i+1).toFixed(1),y:(T+h-bh).toFixed(1),width:Math.max(bw-2,1).toFixed(1),height:bh.toFixed(1),fill:colorOf?colorOf(it[0]):COLORS[0]},f.svg);
    var tt=el('title',{},r);tt.textContent=it[0]+': '+it[1];});
  done(f,items.length);
}
var tl=D.timeline||[];
lines('chart-throughput',[
  {name:'sent/s',pts:tl.map(function(t){return [t.t,t.sent];})},
  {name:'answered/s',pts:tl.map(function(t){return [t.t,t.answered];})},
  {name:'errors/s',pts:tl.map(function(t){return [t.t,t.errors];})}],'seconds since start','requests per second');
var lt=tl.filter(function(t){return t.answered>0;});
lines('chart-latency',[
  {name:'p50',pts:lt.map(function(t){return [t.t,t.p50_ms];})},
  {name:'p90',pts:lt.map(function(t){return [t.t,t.p90_ms];})},
  {name:'p99',pts:lt.map(function(t){return [t.t,t.p99_ms];})},
  {name:'max',pts:lt.map(function(t){return [t.t,t.max_ms];})}],'seconds since start','latency (ms)');
bars('chart-distribution',(D.distribution||[]).map(function(b){return ['\u2264'+fmt(b.le_ms),b.count];}),'latency (ms, log buckets)','answers');
var codes=(D.codes&&D.codes.all)||{};
bars('chart-codes',Object.keys(codes).sort().map(function(c){return [c,codes[c]];}),'response code (DE39)','answers',function(c){return c==='00'?'#1a7f37':(['51','55','57','61','62','65','75'].indexOf(c)>=0?'#bf8700':'#cf222e');});
var n=document.querySelectorAll('[data-rendered="true"]').length;
var st=document.getElementById('render-status');st.textContent='charts rendered: '+n;st.setAttribute('data-charts',String(n));
})();
"#;

/// The whole report.
pub fn html(sum: &Summary) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let t = &sum.totals;
    let verdict = if sum.passed {
        "<span class=pass>PASSED</span>"
    } else {
        "<span class=fail>FAILED</span>"
    };
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>kks-sim: {name}</title><style>{STYLE}</style></head><body>\
         <h1>kks-sim report: {name} {verdict}</h1>\
         <p class=muted>{mode}, seed {seed}, target {target}, {conns} connections, {terms} terminals, {cards} cards; \
         load {load:.1} s (elapsed {el:.1} s); generator CPU {cores:.2} cores</p>",
        name = esc(&sum.scenario),
        mode = esc(&sum.mode),
        seed = sum.seed,
        target = esc(&sum.target),
        conns = sum.connections,
        terms = sum.terminals,
        cards = sum.cards,
        load = sum.load_s,
        el = sum.elapsed_s,
        cores = sum.cpu.cores,
    );
    let _ = write!(
        h,
        "<table><tr><th>sent</th><th>answered</th><th>throughput/s</th><th>ok</th><th>declines</th><th>errors</th><th>error rate</th>\
         <th>timeouts</th><th>reversals (approved/sent)</th><th>unresolved</th><th>ignored (injected timeouts)</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4} %</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td></tr></table>",
        t.sent,
        t.answered,
        sum.throughput_rps,
        t.ok,
        t.declines,
        t.errors,
        t.error_rate * 100.0,
        t.timeouts,
        t.reversals_approved,
        t.reversals_sent,
        t.unresolved,
        t.ignored
    );
    if !sum.thresholds.is_empty() {
        h.push_str(
            "<h2>Thresholds</h2><table><tr><th>threshold</th><th>value</th><th>result</th></tr>",
        );
        for th in &sum.thresholds {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&th.expr),
                th.value.map(|v| format!("{v:.4}")).unwrap_or("-".into()),
                if th.passed {
                    "<span class=pass>ok</span>"
                } else {
                    "<span class=fail>missed</span>"
                }
            );
        }
        h.push_str("</table>");
    }
    if let Some(m) = &sum.money_check {
        let _ = write!(
            h,
            "<h2>Money check</h2><p>{} — {} cards checked against <code>kks-switch audit --json</code>: \
             approved net debits seen {} vs ledger net {}; {} mismatched; {} audit violations.</p>",
            if m.passed {
                "<span class=pass>ok</span>"
            } else {
                "<span class=fail>FAILED</span>"
            },
            m.cards_checked,
            m.sim_net,
            m.ledger_net,
            m.cards_mismatched,
            m.audit_violations.len()
        );
        for x in m.mismatches.iter().chain(&m.audit_violations) {
            let _ = write!(h, "<div class=fail>{}</div>", esc(x));
        }
    }
    h.push_str(
        "<h2>Throughput over time</h2><div class=chart id=chart-throughput data-chart=throughput></div>\
         <h2>Latency percentiles over time</h2><p class=muted>Latency is measured from the time each request was due \
         (open loop), so a stall shows as latency rather than as a lower rate.</p>\
         <div class=chart id=chart-latency data-chart=latency></div>\
         <h2>Latency distribution</h2><div class=chart id=chart-distribution data-chart=distribution></div>\
         <h2>Response codes</h2><div class=chart id=chart-codes data-chart=codes></div>",
    );
    h.push_str("<h2>Latency by message type (ms)</h2><table><tr><th>type</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>errors</th></tr>");
    for (k, l) in &sum.latency_ms {
        let errors = if k == "all" {
            t.errors
        } else {
            sum.by_kind.get(k).map(|x| x.errors).unwrap_or(0)
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
            esc(k),
            l.count,
            l.mean_ms,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            errors
        );
    }
    h.push_str("</table><h2>Response codes by message type</h2><table><tr><th>type</th><th>codes</th></tr>");
    for (k, c) in &sum.codes {
        let list: Vec<String> = c.iter().map(|(c, n)| format!("{}: {n}", esc(c))).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td style=text-align:left>{}</td></tr>",
            esc(k),
            list.join(", ")
        );
    }
    h.push_str("</table>");
    if !sum.wave.is_empty() {
        h.push_str(
            "<h2>Credit wave</h2><table><tr><th>command</th><th>exit</th><th>seconds</th></tr>",
        );
        for w in &sum.wave {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
                esc(&w.command.join(" ")),
                w.exit_code.map(|c| c.to_string()).unwrap_or("-".into()),
                w.seconds
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<p id=render-status class=muted data-charts=0>charts need JavaScript</p>\
         <script type=application/json id=summary-data>{}</script><script>{SCRIPT}</script></body></html>",
        chart_data(sum)
    );
    h.push('\n');
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_contained() {
        let mut s = Summary {
            scenario: "x</script><b>".into(),
            ..Summary::default()
        };
        s.passed = true;
        let h = html(&s);
        assert!(!h.contains("http://") || !h.contains("src=\"http"));
        assert!(!h.contains("<link"));
        assert!(!h.contains("x</script><b>"));
        for id in [
            "chart-throughput",
            "chart-latency",
            "chart-distribution",
            "chart-codes",
        ] {
            assert!(h.contains(id));
        }
    }
}
