// The status page (GET /): one self-contained HTML document, no external resources, so it
// works offline and behind any firewall. It polls /api/status once a second.
#include "ferry/coordinator/http.hpp"

namespace ferry::coordinator {

namespace {

// The server replaces the FERRY_INITIAL marker with the first snapshot.
constexpr std::string_view kPage = R"FERRYPAGE(<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ferry coordinator</title>
<style>
:root{--fg:#1d2330;--mute:#667085;--line:#e4e7ec;--ok:#12b76a;--warn:#f79009;--bad:#d92d20;--acc:#2e90fa}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:#f8f9fb}
header{padding:12px 20px;background:#101828;color:#fff;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header span{color:#d0d5dd;font-size:13px}
main{padding:16px 20px;display:grid;gap:16px;grid-template-columns:1fr 1fr}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px;min-width:0}
section.wide{grid-column:1/-1}h2{font-size:14px;margin:0 0 8px;color:var(--mute);text-transform:uppercase;letter-spacing:.04em}
.bar{height:18px;background:var(--line);border-radius:9px;overflow:hidden}.bar>div{height:100%;background:var(--acc);width:0;transition:width .3s}
.kv{display:flex;flex-wrap:wrap;gap:6px 18px;margin-top:8px}.kv b{font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);white-space:nowrap}
th{color:var(--mute);font-weight:600;font-size:12px}td.n{text-align:right}
.st{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;color:#fff}.st.ready{background:var(--ok)}.st.starting{background:var(--warn)}.st.gone{background:#98a2b3}
canvas{width:100%;height:160px;display:block}
pre{margin:0;font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word;max-height:260px;overflow:auto}
.fail{border-left:3px solid var(--bad);padding:4px 8px;margin-bottom:6px}.fail pre{color:var(--mute);margin-top:4px}
.mute{color:var(--mute)}#conn.down{color:#fda29b}
</style></head><body>
<header><h1>ferry</h1><span id="coord">coordinator</span><span id="conn"></span></header>
<main>
<section class="wide" id="job"><h2>Progress</h2>
<div class="bar"><div id="progress-fill"></div></div>
<div class="kv" id="progress"></div></section>
<section class="wide"><h2>Workers</h2><div style="overflow-x:auto"><table id="workers">
<thead><tr><th>worker</th><th>host</th><th>name</th><th>pid</th><th>where</th><th>state</th><th class="n">tasks</th><th class="n">failures</th><th class="n">CPU s</th><th class="n">RSS MiB</th><th class="n">heard s ago</th></tr></thead>
<tbody></tbody></table></div></section>
<section><h2>Throughput (items/s)</h2><canvas id="chart" width="600" height="160"></canvas></section>
<section><h2>Recent failures</h2><div id="failures"><span class="mute">none</span></div></section>
<section class="wide"><h2>Worker output</h2><pre id="log" class="mute">(no lines yet)</pre></section>
</main>
<script>
"use strict";
const initial = /*FERRY_INITIAL*/null;
const token = new URLSearchParams(location.search).get("token");
const samples = [];  // [seconds, items done]
function el(tag, text, cls){const e=document.createElement(tag);if(text!==undefined)e.textContent=text;if(cls)e.className=cls;return e;}
function fmt(v,d){return v===null||v===undefined?"-":(typeof v==="number"&&!Number.isInteger(v)?v.toFixed(d===undefined?1:d):String(v));}
function render(s){
  const c=s.coordinator,j=s.job;
  document.getElementById("coord").textContent="pid "+c.pid+" on "+c.host+" · up "+fmt(c.uptime_s,0)+" s · "+c.transport+(c.listen?" · listening on "+c.listen:"");
  const total=j.items_total,done=j.items_done!==undefined?j.items_done:j.tasks_completed;
  const frac=total>0?Math.min(1,done/total):(j.finished?1:0);
  document.getElementById("progress-fill").style.width=(100*frac).toFixed(1)+"%";
  const kv=document.getElementById("progress");kv.textContent="";
  const items=[["task",j.task],["items",fmt(done)+" / "+fmt(total)],["failed",j.items_failed],["rate",fmt(j.rate_per_s)+"/s"],["ETA",fmt(j.eta_s,0)+" s"],
    ["in flight",j.in_flight],["queued",j.queued],["retries",j.retries],["worker deaths",j.worker_deaths],["state",j.finished?"finished":"running"]];
  for(const [k,v] of items){if(v===undefined)continue;const s2=el("span",k+" ");s2.appendChild(el("b",fmt(v)));kv.appendChild(s2);}
  const tb=document.querySelector("#workers tbody");tb.textContent="";
  for(const w of s.workers){
    const tr=el("tr");tr.dataset.worker=String(w.id);tr.className="worker-row";
    const st=el("span",w.state,"st "+w.state);
    const cells=["w"+w.id,w.host,w.name||"-",w.pid,w.remote?"remote":"local",null,w.tasks_done,w.failures,fmt(w.cpu_s,2),w.rss_bytes===null?"-":(w.rss_bytes/1048576).toFixed(1),fmt(w.heartbeat_age_s)];
    cells.forEach((v,i)=>{const td=el("td");if(i===5)td.appendChild(st);else td.textContent=String(v);if(i>=6)td.className="n";tr.appendChild(td);});
    tb.appendChild(tr);
  }
  const fl=document.getElementById("failures");fl.textContent="";
  if(!s.failures.length)fl.appendChild(el("span","none","mute"));
  for(const f of s.failures.slice(-10).reverse()){const d=el("div",undefined,"fail");d.appendChild(el("div",new Date(f.time*1000).toLocaleTimeString()+" "+f.text));if(f.stack)d.appendChild(el("pre",f.stack));fl.appendChild(d);}
  const lg=document.getElementById("log");
  lg.textContent=s.log.length?s.log.map(l=>"[w"+l.worker+"] "+l.line).join("\n"):"(no lines yet)";
  lg.className=s.log.length?"":"mute";
  if(s.history&&s.history.length){samples.length=0;for(const h of s.history)samples.push(h);}
  samples.push([c.uptime_s,done||0]);if(samples.length>300)samples.shift();
  draw();
}
function draw(){
  const cv=document.getElementById("chart"),g=cv.getContext("2d");
  const W=cv.width=cv.clientWidth||600,H=cv.height=160;g.clearRect(0,0,W,H);
  const pts=[];for(let i=1;i<samples.length;i++){const dt=samples[i][0]-samples[i-1][0];if(dt>0)pts.push([samples[i][0],(samples[i][1]-samples[i-1][1])/dt]);}
  g.strokeStyle="#e4e7ec";g.beginPath();g.moveTo(0,H-20.5);g.lineTo(W,H-20.5);g.stroke();
  if(pts.length<1){g.fillStyle="#667085";g.fillText("collecting…",8,20);return;}
  const max=Math.max(1,...pts.map(p=>p[1])),t0=pts[0][0],t1=Math.max(t0+1,pts[pts.length-1][0]);
  g.fillStyle="#667085";g.font="11px sans-serif";g.fillText(max.toFixed(0)+"/s",4,12);
  g.strokeStyle="#2e90fa";g.lineWidth=2;g.beginPath();
  pts.forEach((p,i)=>{const x=(p[0]-t0)/(t1-t0)*(W-8)+4,y=H-20-(p[1]/max)*(H-36);i?g.lineTo(x,y):g.moveTo(x,y);});g.stroke();
}
async function poll(){
  try{const r=await fetch("api/status"+(token?"?token="+encodeURIComponent(token):""),{cache:"no-store"});
    if(!r.ok)throw new Error("HTTP "+r.status);render(await r.json());
    const cn=document.getElementById("conn");cn.textContent="live";cn.className="";}
  catch(e){const cn=document.getElementById("conn");cn.textContent="disconnected ("+e.message+")";cn.className="down";}
  setTimeout(poll,1000);
}
if(initial)render(initial);
setTimeout(poll,1000);
</script></body></html>
)FERRYPAGE";

}  // namespace

std::string_view status_page() {
  return kPage;
}

}  // namespace ferry::coordinator
