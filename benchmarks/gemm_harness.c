/* A C harness around fastnn/backends/cython/gemm.h: the GEMM alone, outside Python, for choosing its
 * block sizes and micro-tiles (REPORT.md, "fastnn's own GEMM"). It checks the result against a double
 * sum (every 37th row when m > 64), then prints GFLOP/s as the best of 5 timings of a loop of calls.
 *
 *   gcc -O3 -march=native -fopenmp -I fastnn/backends/cython benchmarks/gemm_harness.c -o /tmp/gemm -lm
 *   /tmp/gemm M N K THREADS [TRANS_A TRANS_B]      e.g. /tmp/gemm 1024 1024 1024 2
 *   FASTNN_GEMM_ISA=avx2 /tmp/gemm 1024 1024 1024 2  (the AVX2 micro-kernel on an AVX-512 CPU)
 */
#include "gemm.h"
#include <stdio.h>
#include <time.h>
#include <math.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  if(argc<5){fprintf(stderr,"usage: %s M N K THREADS [TRANS_A TRANS_B]\n",argv[0]);return 2;}
  fastnn_gemm_init();
  int m=atoi(argv[1]),n=atoi(argv[2]),k=atoi(argv[3]),th=atoi(argv[4]),ta=argc>5?atoi(argv[5]):0,tb=argc>6?atoi(argv[6]):0;
  float*a=malloc(sizeof(float)*m*k),*b=malloc(sizeof(float)*k*n),*c=malloc(sizeof(float)*m*n);
  for(long i=0;i<(long)m*k;i++)a[i]=(float)((i*7919%1000)/1000.0-0.5);
  for(long i=0;i<(long)k*n;i++)b[i]=(float)((i*104729%1000)/1000.0-0.5);
  int lda=ta?m:k, ldb=tb?k:n;
  fastnn_sgemm_strided(ta,tb,m,n,k,1.0f,a,lda,b,ldb,0.0f,c,n,1,th);
  double maxerr=0;
  for(int i=0;i<m;i+= (m>64? 37:1)) for(int j=0;j<n;j++){double s=0;for(int p=0;p<k;p++)s+=(double)(ta?a[p*lda+i]:a[i*lda+p])*(tb?b[j*ldb+p]:b[p*ldb+j]); double e=fabs(s-c[i*n+j]); if(e>maxerr)maxerr=e;}
  int reps = (int)(2e10/(2.0*m*n*k)); if(reps<3)reps=3; if (reps>200000) reps=200000;
  double best=1e9;
  for(int r=0;r<5;r++){double t0=now();for(int i=0;i<reps;i++)fastnn_sgemm_strided(ta,tb,m,n,k,1.0f,a,lda,b,ldb,0.0f,c,n,1,th);double t=(now()-t0)/reps;if(t<best)best=t;}
  printf("%s %dx%dx%d th%d: %.1f GFLOP/s  (%.2f us)  maxerr %.2e\n",fastnn_gemm_isa(),m,n,k,th,2.0*m*n*k/best/1e9,best*1e6,maxerr);
}
